/**
 * Draft autosave: saves after a few seconds without edits, never runs two saves at once,
 * marks the viewer saved only when no edit arrived while saving, retries after errors,
 * and stops on a 409 conflict so the page can ask the user what to do.
 */

/** What the autosaver needs from the viewer. */
export interface AutosaveTarget {
  isDirty(): boolean;
  /** Increases with every edit, undo and redo. */
  getEditCount(): number;
  markSaved(): void;
}

export type AutosaveState = "idle" | "pending" | "saving" | "saved" | "error" | "conflict";

export interface AutosaveOptions {
  /** Inactivity before saving, ms. */
  delayMs?: number;
  /** Wait before retrying a failed save, ms. */
  retryMs?: number;
  onStateChange?: (state: AutosaveState, message: string) => void;
  /** Called once on a 409; autosave stays stopped until {@link Autosaver.resume}. */
  onConflict?: (error: unknown) => void;
}

export const DEFAULT_AUTOSAVE_DELAY_MS = 3000;
export const DEFAULT_AUTOSAVE_RETRY_MS = 10000;

function isConflict(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as { status?: unknown }).status === 409;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class Autosaver {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private current: AutosaveState = "idle";
  private readonly delayMs: number;
  private readonly retryMs: number;

  /** `save` uploads the viewer's current mask as the draft (e.g. via PleuraApi.saveDraft). */
  constructor(
    private readonly target: AutosaveTarget,
    private readonly save: () => Promise<void>,
    private readonly options: AutosaveOptions = {},
  ) {
    this.delayMs = options.delayMs ?? DEFAULT_AUTOSAVE_DELAY_MS;
    this.retryMs = options.retryMs ?? DEFAULT_AUTOSAVE_RETRY_MS;
  }

  get state(): AutosaveState {
    return this.current;
  }

  /** Call on every edit: restarts the inactivity timer. */
  notifyEdit(): void {
    if (this.stopped) return;
    this.setState("pending", "Unsaved changes");
    this.schedule(this.delayMs);
  }

  /** Save now if there is anything unsaved (before submitting or leaving). */
  async flush(): Promise<void> {
    this.clearTimer();
    if (this.running) await this.running;
    if (!this.stopped && this.target.isDirty()) await this.run();
  }

  /** Stop autosaving (after a conflict, or when the page is done). */
  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  /** Start again after the user resolved a conflict. */
  resume(): void {
    this.stopped = false;
    if (this.target.isDirty()) this.notifyEdit();
    else this.setState("idle", "");
  }

  private schedule(ms: number): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, ms);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private run(): Promise<void> {
    if (this.running) {
      // A save is under way: save again once it ends if edits arrived meanwhile.
      return this.running.then(() => (this.target.isDirty() && !this.stopped ? this.run() : undefined));
    }
    this.running = this.saveOnce().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async saveOnce(): Promise<void> {
    if (this.stopped || !this.target.isDirty()) return;
    const editsBefore = this.target.getEditCount();
    this.setState("saving", "Saving draft…");
    try {
      await this.save();
    } catch (error) {
      if (isConflict(error)) {
        this.stop();
        this.setState("conflict", describe(error));
        this.options.onConflict?.(error);
      } else {
        this.setState("error", `Draft not saved: ${describe(error)}. Retrying in ${Math.round(this.retryMs / 1000)} s.`);
        this.schedule(this.retryMs);
      }
      return;
    }
    if (this.target.getEditCount() === editsBefore) {
      this.target.markSaved();
      this.setState("saved", "Draft saved");
    } else {
      this.setState("pending", "Unsaved changes");
      this.schedule(this.delayMs);
    }
  }

  private setState(state: AutosaveState, message: string): void {
    this.current = state;
    this.options.onStateChange?.(state, message);
  }
}

/** Warn before leaving the page while `hasUnsaved()` is true; returns a function that removes the guard. */
export function installLeaveGuard(hasUnsaved: () => boolean, target: Pick<Window, "addEventListener" | "removeEventListener"> = window): () => void {
  const handler = (event: BeforeUnloadEvent): void => {
    if (!hasUnsaved()) return;
    event.preventDefault();
    event.returnValue = "";
  };
  target.addEventListener("beforeunload", handler);
  return () => target.removeEventListener("beforeunload", handler);
}
