/**
 * The annotation page of one task (Django template `workbench/task.html`): claims the task,
 * restores the caller's draft or loads the latest revision, mounts the viewer, autosaves
 * drafts, and offers Accept / Submit edits / Reject with a reason. A 409 opens a dialog that
 * offers to reload the other person's version or keep this edit as a new revision.
 * A banner on top tells what already happened to the task (an earlier accept/submit/reject,
 * or this page's own, after which the page is read-only); leaving the page gives the claim
 * up once nothing is left unsaved.
 */
import { ApiError, ConflictError, instanceImageIds, PleuraApi, type SaveResult, type TaskPayload } from "./api";
import { Autosaver, installLeaveGuard, type AutosaveState } from "./autosave";
import { chooseUploadSlices } from "./maskCodec";
import { mountViewer, type MountedViewer } from "./mount";
import type { Labelmap } from "./viewer";

export interface AnnotationPageOptions {
  taskId: number;
  /** Where "Back to my queue" goes. */
  queueUrl?: string;
  /** Show the task without editing (e.g. an ML engineer's role). */
  readOnly?: boolean;
  /** Autosave delay after the last edit, ms. */
  autosaveDelayMs?: number;
  /** The task's latest revision id as the server rendered the page: its mask is fetched while the task is claimed. */
  revisionId?: number | null;
}

export type PagePhase = "loading" | "ready" | "saving" | "done" | "error";

export interface AnnotationPage {
  readonly taskId: number;
  phase: PagePhase;
  task: TaskPayload | null;
  mounted: MountedViewer | null;
  /** Revision every write names as its parent (moves on after "keep mine"). */
  parentRevision: number | null;
  /** Whether the viewer started from the caller's restored draft. */
  restoredDraft: boolean;
  autosaver: Autosaver | null;
  /** Timings for the benchmark (ms since navigation start). */
  timings: { imageShown?: number; maskShown?: number; lastSaveMs?: number };
  /** Last action's result. */
  result: SaveResult | null;
}

const REASON_FALLBACK = [
  { code: "unreadable", label: "Unreadable image" },
  { code: "not_chest", label: "Not a chest image" },
  { code: "wrong_modality", label: "Wrong modality" },
  { code: "other", label: "Other" },
];

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text) node.textContent = text;
  return node;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** "Other, “lateral view”", or the label alone when there is no text. */
function formatReason(label: string, text = ""): string {
  return text.trim() ? `${label}, “${text.trim()}”` : label;
}

const ACTION_VERBS: Readonly<Record<string, string>> = { accept: "accepted", submit: "submitted edits", reject: "rejected" };
const STATUS_TITLES: Readonly<Record<string, string>> = { in_review: "In review", done: "Reviewed", rejected: "Closed as rejected" };

/** What the top banner says: a summary (shown strong) and what it means for this page. */
export interface OutcomeText {
  summary: string;
  note: string;
}

/**
 * What already happened to the loaded task (its latest revision's accept/submit/reject, or
 * that it is in review), or null when there is nothing to tell (e.g. a fresh model proposal).
 */
export function describeLastOutcome(task: Pick<TaskPayload, "status" | "revision" | "returned">, editable: boolean): OutcomeText | null {
  if (task.returned) {
    const at = new Date(task.returned.at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    return {
      summary: `Returned by ${task.returned.reviewer ?? "the reviewer"} on ${at}: “${task.returned.comment}”`,
      note: editable ? "Fix the mask and submit it again." : "",
    };
  }
  const rev = task.revision;
  if (!rev || (!rev.action && !Object.hasOwn(STATUS_TITLES, task.status))) return null;
  const title = STATUS_TITLES[task.status] ?? "Last outcome";
  const verb = rev.action ? ACTION_VERBS[rev.action] ?? rev.action : "saved";
  const when = new Date(rev.created_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  const reason = rev.reason ? ` (reason: ${formatReason(rev.reason, rev.reason_text)})` : "";
  const which = rev.number !== undefined ? `revision ${rev.number}` : "the latest revision";
  return {
    summary: `${title}: ${which} ${verb} by ${rev.author ?? "the model"} on ${when}${reason}.`,
    note: editable ? "Saving here creates a new revision on top of the work already sent to review." : "",
  };
}

/** "revision 3" for a save result (its number in the lineage when the server gives it). */
function revisionName(result: SaveResult): string {
  return `revision ${result.revision_number ?? result.revision_id}`;
}

/** Tell the annotator what the CT reader corrected: the slices on screen are the stored ones, not the model's grid. */
function showSeriesWarnings(note: HTMLElement, warnings: string[]): void {
  note.hidden = warnings.length === 0;
  note.textContent = warnings.length === 0 ? ""
    : `This series was read with corrections; the model saw the corrected volume and the slices below are the stored ones: ${warnings.join("; ")}.`;
}

/** Show `text` (and a link after it) in the top banner; null hides it. */
function showOutcome(banner: HTMLElement, text: OutcomeText | null, kind: "earlier" | "done", link?: HTMLAnchorElement): void {
  banner.hidden = text === null;
  banner.dataset.kind = kind;
  if (text === null) { banner.replaceChildren(); return; }
  banner.replaceChildren(el("strong", {}, text.summary), ...(text.note ? [" ", text.note] : []), ...(link ? [" ", link] : []));
}

interface PageLayout {
  viewerRoot: HTMLDivElement;
  accept: HTMLButtonElement;
  submit: HTMLButtonElement;
  reject: HTMLButtonElement;
  saveState: HTMLElement;
  notice: HTMLElement;
  /** Banner on top: the task's last outcome (earlier, or from this page). */
  outcome: HTMLElement;
  seriesNote: HTMLElement;
  rejectDialog: HTMLDialogElement;
  conflictDialog: HTMLDialogElement;
}

function buildLayout(root: HTMLElement): PageLayout {
  root.classList.add("pa-page");
  const viewerRoot = el("div", { class: "pa-viewer" });
  const bar = el("div", { class: "pa-actions", role: "group", "aria-label": "Task actions" });
  const accept = el("button", { type: "button", "data-action": "accept", title: "Accept the model's mask as it is and send it to review (Ctrl+Enter when unchanged)" }, "Accept mask");
  const submit = el("button", { type: "button", "data-action": "submit", title: "Save your edited mask as a new revision and send it to review" }, "Submit edits");
  const reject = el("button", { type: "button", "data-action": "reject", title: "Reject the task with a reason", "aria-haspopup": "dialog" }, "Reject…");
  const saveState = el("span", { class: "pa-save", role: "status", "aria-live": "polite", "data-testid": "save-state", "data-state": "idle" });
  const notice = el("span", { class: "pa-notice", role: "status", "aria-live": "polite", "data-testid": "notice" });
  bar.append(accept, submit, reject, saveState, notice);

  const rejectDialog = el("dialog", { class: "pa-dialog", "aria-labelledby": "pa-reject-title", "data-testid": "reject-dialog" });
  const conflictDialog = el("dialog", { class: "pa-dialog", "aria-labelledby": "pa-conflict-title", "data-testid": "conflict-dialog", role: "alertdialog" });
  const seriesNote = el("p", { class: "pa-series-note", role: "note", "data-testid": "series-warnings" });
  seriesNote.hidden = true;
  const outcome = el("p", { class: "pa-outcome", role: "status", "aria-live": "polite", "data-testid": "outcome" });
  outcome.hidden = true;
  const top = el("div", { class: "pa-top" });
  top.append(outcome, seriesNote);
  root.replaceChildren(top, viewerRoot, bar, rejectDialog, conflictDialog);
  return { viewerRoot, accept, submit, reject, saveState, notice, outcome, seriesNote, rejectDialog, conflictDialog };
}

/** Mount the whole annotation page for `options.taskId` into `root`. */
export async function mountAnnotationPage(root: HTMLElement, options: AnnotationPageOptions): Promise<AnnotationPage> {
  const api = new PleuraApi();
  const layout = buildLayout(root);
  const page: AnnotationPage = {
    taskId: options.taskId, phase: "loading", task: null, mounted: null, parentRevision: null,
    restoredDraft: false, autosaver: null, timings: {}, result: null,
  };
  const openedAt = performance.now();
  const timeSpent = (): number => (performance.now() - openedAt) / 1000;
  let readOnly = options.readOnly ?? false;
  let forceWholeMask = false;
  let removeLeaveGuard: (() => void) | null = null;
  let heartbeat: ReturnType<typeof setInterval> | null = null;
  /** The claim was given up by this page (leaving), and a departure through a link or form is under way. */
  let released = false;
  let leaving = false;
  const setPhase = (phase: PagePhase): void => {
    page.phase = phase;
    root.dataset.pageState = phase;
  };
  const notify = (text: string, kind: "info" | "error" = "info"): void => {
    layout.notice.textContent = text;
    layout.notice.dataset.kind = kind;
    layout.notice.setAttribute("role", kind === "error" ? "alert" : "status");
  };
  const setButtons = (): void => {
    const busy = page.phase !== "ready";
    const edited = page.restoredDraft || (page.mounted?.viewer.getEditCount() ?? 0) > 0 || forceWholeMask;
    layout.accept.disabled = busy || readOnly || page.parentRevision === null || edited;
    layout.accept.title = edited
      ? "You changed the mask: use Submit edits (Accept keeps the model's mask as it was)"
      : "Accept the model's mask as it is and send it to review";
    layout.submit.disabled = busy || readOnly;
    layout.reject.disabled = busy || readOnly;
    // The likely next step stands out: Accept while the mask is the model's, Submit once it is edited
    // (or when there is no mask to accept); nothing while busy or read-only.
    const actionable = !busy && !readOnly;
    layout.accept.dataset.primary = String(actionable && !edited && page.parentRevision !== null);
    layout.submit.dataset.primary = String(actionable && (edited || page.parentRevision === null));
  };
  setPhase("loading");
  setButtons();

  // --- claim (or just read) the task, then the mask: draft of the current parent, else the latest revision
  let task: TaskPayload;
  // Start the mask download at once (in parallel with the claim) when the page names the revision.
  const early = options.revisionId ? api.getRevisionMask(options.revisionId) : null;
  early?.catch(() => undefined); // a failure here is handled where the mask is used
  try {
    if (readOnly) task = await api.getTask(options.taskId);
    else {
      try {
        task = await api.claim(options.taskId);
      } catch (err) {
        if (!(err instanceof ApiError) || (err.status !== 423 && err.status !== 403)) throw err;
        readOnly = true;
        notify(`${err.message} The task is shown read-only.`, "error");
        task = await api.getTask(options.taskId);
      }
    }
    page.task = task;
    page.parentRevision = task.revision?.id ?? null;
    showSeriesWarnings(layout.seriesNote, task.series_warnings ?? []);
    showOutcome(layout.outcome, describeLastOutcome(task, !readOnly), "earlier");
    const parentMask: Promise<Labelmap | null> = !task.revision ? Promise.resolve(null)
      : early && task.revision.id === options.revisionId ? early : api.getRevisionMask(task.revision.id);
    let labelmap: Labelmap | null;
    let baseline: Uint8Array | undefined;
    const draftFits = !readOnly && task.draft !== null && task.draft.parent_revision === page.parentRevision;
    if (draftFits) {
      const [draft, parent] = await Promise.all([api.getDraftMask(options.taskId), parentMask]);
      labelmap = draft ?? parent;
      page.restoredDraft = draft !== null;
      baseline = draft && parent ? parent.data : undefined;
    } else {
      labelmap = await parentMask;
      if (!readOnly && task.draft) notify("Your earlier draft was made on an older revision; the latest revision is shown instead.", "error");
    }
    const mounted = await mountViewer(layout.viewerRoot, {
      imageIds: instanceImageIds(task),
      modality: task.modality,
      labelmap,
      baseline,
      readOnly,
      onChange: (change) => {
        if (change.reason === "edit" || change.reason === "undo" || change.reason === "redo") {
          page.autosaver?.notifyEdit();
          setButtons();
        }
      },
    });
    page.mounted = mounted;
    page.timings.imageShown = performance.now();
    page.timings.maskShown = labelmap ? performance.now() : undefined;
    if (page.restoredDraft) notify(`Draft restored (saved ${new Date(task.draft!.saved_at).toLocaleTimeString()}).`);
    const kept = task.kept_drafts ?? [];
    if (kept.length > 0) {
      notify(kept.map((k) => `Your unsubmitted draft was kept as revision ${k.revision_number}: ${k.saved_over_by ?? "someone"} saved over this task.`).join(" "), "error");
    }
  } catch (err) {
    setPhase("error");
    notify(message(err), "error");
    throw err;
  }
  const viewer = page.mounted.viewer;

  // --- autosave, leave guard, lease heartbeat
  const uploadOptions = () => ({
    parentRevision: page.parentRevision,
    slices: forceWholeMask ? undefined : chooseUploadSlices(viewer.shape, viewer.changedSlices()),
  });
  let lastConflictFrom: "draft" | "submit" = "draft";
  const showSaveState = (state: AutosaveState | "submitted", text: string): void => {
    layout.saveState.dataset.state = state;
    layout.saveState.textContent = text;
  };
  if (!readOnly) {
    page.autosaver = new Autosaver(viewer, async () => {
      const started = performance.now();
      await api.saveDraft(options.taskId, viewer.getLabelmap(), uploadOptions());
      page.timings.lastSaveMs = performance.now() - started;
    }, {
      delayMs: options.autosaveDelayMs,
      onStateChange: (state, text) => showSaveState(state, text),
      onConflict: (err) => {
        lastConflictFrom = "draft";
        openConflict(err as ConflictError);
      },
    });
    removeLeaveGuard = installLeaveGuard(() => viewer.isDirty() && page.phase !== "done");
    const renewClaim = (): void => {
      if (page.phase === "done") return;
      api.claim(options.taskId).catch((err: unknown) => notify(`Your claim on this task could not be renewed: ${message(err)}`, "error"));
    };
    const every = Math.max(30, Math.floor((task.lease_seconds ?? 1800) / 3)) * 1000;
    heartbeat = setInterval(renewClaim, every);
    releaseOnLeave(renewClaim);
  }

  /**
   * Give the claim up when the page is left, best effort, so that nobody else finds the task
   * locked for the rest of the lease. Not with unsaved edits: the leave guard warns, and the
   * claim keeps the draft's chance to be saved. Not after an action either: the server released
   * the claim then. Links and the log-out form wait for the release (the next page then no longer
   * shows the claim); any other way out sends it on `pagehide` with `keepalive`. A page restored
   * from the back/forward cache claims the task again at once.
   */
  function releaseOnLeave(renewClaim: () => void): void {
    window.addEventListener("pagehide", () => {
      if (page.phase === "done" || viewer.isDirty() || released) return;
      released = true;
      api.release(options.taskId).catch(() => undefined);
    });
    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) return;
      released = false;
      renewClaim();
    });
    document.addEventListener("click", leaveThroughLink);
    document.addEventListener("submit", leaveThroughForm);
  }

  /** Save a pending draft; true when nothing is left unsaved (a failed save or a 409 keeps the user here). */
  async function saveBeforeLeaving(): Promise<boolean> {
    if (!viewer.isDirty()) return true;
    showSaveState("saving", "Saving draft before leaving…");
    await (page.autosaver?.flush() ?? Promise.resolve());
    return !viewer.isDirty();
  }

  /** Leave (`go`) after saving the draft and giving the claim up; stay when the draft could not be saved. */
  async function leave(go: () => void): Promise<void> {
    if (leaving) return;
    leaving = true;
    try {
      if (!(await saveBeforeLeaving())) return;
      released = true;
      await api.release(options.taskId).catch(() => undefined);
      go();
    } finally {
      leaving = false;
    }
  }

  /** A plain same-tab link to another page (not a download, not an anchor on this page) while the task is open. */
  function leaveThroughLink(event: MouseEvent): void {
    const link = event.target instanceof Element ? event.target.closest<HTMLAnchorElement>("a[href]") : null;
    if (!link || event.defaultPrevented || page.phase !== "ready") return;
    const sameTab = event.button === 0 && !event.ctrlKey && !event.metaKey && !event.shiftKey && !event.altKey
      && (!link.target || link.target === "_self");
    const url = new URL(link.href, location.href);
    const samePage = url.origin === location.origin && url.pathname === location.pathname && url.search === location.search;
    if (!sameTab || link.hasAttribute("download") || samePage) return;
    event.preventDefault();
    void leave(() => location.assign(link.href));
  }

  /** The log-out form: give the claim up while the session still exists. */
  function leaveThroughForm(event: SubmitEvent): void {
    const form = event.target instanceof HTMLFormElement ? event.target : null;
    if (!form || event.defaultPrevented || page.phase !== "ready" || root.contains(form)) return;
    event.preventDefault();
    void leave(() => form.submit());
  }

  const finish = (result: SaveResult, outcome: string, text: string): void => {
    page.result = result;
    page.autosaver?.stop();
    viewer.markSaved();
    removeLeaveGuard?.();
    if (heartbeat) clearInterval(heartbeat);
    setPhase("done");
    viewer.lock();
    setButtons();
    showSaveState("submitted", text);
    notify("");
    const link = el("a", { href: options.queueUrl ?? "/queue/", "data-testid": "back-to-queue" }, "Back to my queue");
    showOutcome(layout.outcome, { summary: `${outcome} — in review.`, note: "This page is now read-only; nothing more is saved here." },
      "done", link);
    link.focus();
  };

  const run = async (what: "submit" | "accept", action: () => Promise<SaveResult>, done: string,
    outcome: (result: SaveResult) => string): Promise<void> => {
    setPhase("saving");
    setButtons();
    try {
      const started = performance.now();
      const result = await action();
      page.timings.lastSaveMs = performance.now() - started;
      finish(result, outcome(result), done);
    } catch (err) {
      setPhase("ready");
      setButtons();
      if (err instanceof ConflictError) {
        lastConflictFrom = what === "submit" ? "submit" : "draft";
        openConflict(err);
      } else notify(message(err), "error");
    }
  };

  const submitEdits = async (): Promise<void> => {
    page.autosaver?.stop();
    await run("submit", () => api.submit(options.taskId, viewer.getLabelmap(), { ...uploadOptions(), timeSpentS: timeSpent() }),
      "Edits submitted", (r) => `Submitted as ${revisionName(r)}`);
    if (page.phase !== "done" && !layout.conflictDialog.open) page.autosaver?.resume();
  };

  layout.submit.addEventListener("click", () => void submitEdits());
  layout.accept.addEventListener("click", () => {
    if (page.parentRevision === null) return;
    void run("accept", () => api.accept(options.taskId, page.parentRevision as number, timeSpent()), "Mask accepted",
      (r) => `Accepted the mask as ${revisionName(r)}`);
  });

  // --- reject dialog
  const reasons = task.reject_reasons?.length ? task.reject_reasons : REASON_FALLBACK;
  const rejectForm = el("form", { method: "dialog" });
  const fieldset = el("fieldset");
  fieldset.append(el("legend", { id: "pa-reject-title" }, "Why do you reject this task?"));
  reasons.forEach((r, i) => {
    const id = `pa-reason-${r.code}`;
    const input = el("input", { type: "radio", name: "reason", value: r.code, id, ...(i === 0 ? { required: "" } : {}) });
    const label = el("label", { for: id }, r.label);
    const row = el("div", { class: "pa-reason" });
    row.append(input, label);
    fieldset.append(row);
  });
  const textLabel = el("label", { for: "pa-reject-text" }, "Details (required for Other)");
  const text = el("textarea", { id: "pa-reject-text", rows: "3", maxlength: "1000" });
  const rejectError = el("p", { class: "pa-error", role: "alert" });
  const confirmReject = el("button", { type: "submit", value: "reject", "data-action": "confirm-reject" }, "Reject task");
  const cancelReject = el("button", { type: "button", "data-action": "cancel-reject" }, "Cancel");
  rejectForm.append(fieldset, textLabel, text, rejectError, el("div", { class: "pa-dialog-buttons" }));
  rejectForm.lastElementChild!.append(confirmReject, cancelReject);
  layout.rejectDialog.append(rejectForm);
  cancelReject.addEventListener("click", () => layout.rejectDialog.close());
  layout.reject.addEventListener("click", () => {
    rejectError.textContent = "";
    layout.rejectDialog.showModal();
    rejectForm.querySelector<HTMLInputElement>("input[name=reason]")?.focus();
  });
  rejectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = (rejectForm.querySelector<HTMLInputElement>("input[name=reason]:checked")?.value) ?? "";
    if (!reason) { rejectError.textContent = "Choose a reason."; return; }
    if (reason === "other" && !text.value.trim()) { rejectError.textContent = "Say why you reject the task."; text.focus(); return; }
    layout.rejectDialog.close();
    page.autosaver?.stop();
    const label = reasons.find((r) => r.code === reason)?.label ?? reason;
    void run("accept", () => api.reject(options.taskId, page.parentRevision, reason, text.value, timeSpent()), "Task rejected",
      (r) => `Rejected (${formatReason(label, text.value)}) as ${revisionName(r)}`)
      .then(() => { if (page.phase !== "done") page.autosaver?.resume(); });
  });

  // --- conflict dialog (409)
  const conflictText = el("p", { "data-testid": "conflict-text" });
  const reloadButton = el("button", { type: "button", "data-action": "conflict-reload" }, "Reload their version");
  const keepButton = el("button", { type: "button", "data-action": "conflict-keep" }, "Keep mine as a new revision");
  const buttons = el("div", { class: "pa-dialog-buttons" });
  buttons.append(keepButton, reloadButton);
  const conflictTitle = el("h2", { id: "pa-conflict-title" }, "Someone else saved this task");
  layout.conflictDialog.append(conflictTitle, conflictText, buttons);
  let conflictRevision: number | null = null;
  function openConflict(err: ConflictError): void {
    conflictRevision = err.currentRevision;
    const yours = err.savedByYou;
    conflictTitle.textContent = yours ? "You saved this task in another tab" : "Someone else saved this task";
    reloadButton.textContent = yours ? "Reload the other tab's version" : "Reload their version";
    conflictText.textContent = `${err.message} Reloading drops this tab's unsaved edit; keeping it saves this mask on top of ${yours ? "the other tab's" : "theirs"}.`;
    notify(yours ? "Save refused: you saved this task in another tab or window." : "Save refused: someone else saved this task in the meantime.", "error");
    if (!layout.conflictDialog.open) layout.conflictDialog.showModal();
    keepButton.focus();
  }
  reloadButton.addEventListener("click", () => {
    layout.conflictDialog.close();
    viewer.markSaved();
    removeLeaveGuard?.();
    location.reload();
  });
  keepButton.addEventListener("click", () => {
    layout.conflictDialog.close();
    page.parentRevision = conflictRevision;
    forceWholeMask = true;
    setButtons();
    notify("Your edit will be saved as a new revision on top of the other one.");
    if (lastConflictFrom === "submit") void submitEdits();
    else {
      page.autosaver?.resume();
      void page.autosaver?.flush();
    }
  });

  setPhase("ready");
  setButtons();
  if (readOnly) showSaveState("idle", "Read-only");
  return page;
}
