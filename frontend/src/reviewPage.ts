/**
 * The review page of one task (Django template `workbench/review_task.html`): the final mask
 * (editable, for "edit and approve"), the model's proposal as an outline, and the difference
 * (lung added in green, removed in magenta) over the image; the edit measure, QC flags and the
 * task's history beside it; actions Approve (or "Approve with my edits" once the reviewer has
 * drawn), and Return to the annotator with a comment.
 */
import { ApiError, ConflictError, fetchMask, instanceImageIds, type InstancePayload } from "./api";
import { encodeMask, formatShapeHeader } from "./maskCodec";
import { mountViewer, type MountedViewer } from "./mount";
import type { Labelmap, OverlayOptions } from "./viewer";

export const REVIEW_ROOT = "/api/review";

export interface ReviewRevision {
  id: number;
  number: number;
  status: string;
  source: string;
  method: string;
  author: string | null;
  model: string | null;
  confidence: number | null;
  note: string;
  created_at: string;
}

export interface EditMeasure {
  added: number;
  removed: number;
  relabelled: number;
  changed_fraction: number;
  dice: number;
  dice_right: number;
  dice_left: number;
  hd95: number;
  hd95_right: number;
  hd95_left: number;
  hd95_unit: string;
}

export interface ReviewPayload {
  id: number;
  project: number;
  status: string;
  modality: string;
  instances: InstancePayload[];
  shape: [number, number, number];
  final: ReviewRevision | null;
  proposal: ReviewRevision | null;
  measure: EditMeasure | null;
  flags: { name: string; message: string }[];
  history: { at: string; who: string; what: string; revision: number; comment: string }[];
  can_review: boolean;
  /** A double reading below the agreement threshold, waiting for adjudication (else null). */
  double_read: {
    status: string; first: ReviewRevision; second: ReviewRevision; dice: number; dice_right: number; dice_left: number;
    hd95_right: number; hd95_left: number; hd95_unit: string; threshold: number;
  } | null;
}

export interface ReviewDecisionResult {
  decision: string;
  task_status: string;
  curated_revision: number | null;
  comment: string;
}

export interface ReviewPageOptions {
  taskId: number;
  /** Where "Back to the review queue" goes. */
  queueUrl?: string;
}

export interface ReviewPage {
  readonly taskId: number;
  phase: "loading" | "ready" | "saving" | "done" | "error";
  task: ReviewPayload | null;
  mounted: MountedViewer | null;
  result: ReviewDecisionResult | null;
  /** ms since navigation start when image, mask and difference were on screen (benchmark). */
  timings: { shown?: number };
}

/** Colours of the overlays (Okabe–Ito: bluish green for added, reddish purple for removed, yellow outline). */
export const OVERLAY_COLORS = {
  proposal: [240, 228, 66, 255] as [number, number, number, number],
  firstReading: [86, 180, 233, 255] as [number, number, number, number],
  added: [0, 158, 115, 255] as [number, number, number, number],
  removed: [204, 121, 167, 255] as [number, number, number, number],
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text) node.textContent = text;
  return node;
}

function csrfHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const match = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  return { Accept: "application/json", ...(match ? { "X-CSRFToken": decodeURIComponent(match.slice(10)) } : {}), ...extra };
}

async function check(response: Response): Promise<Response> {
  if (response.ok) return response;
  let detail = `${response.status} ${response.statusText}`;
  let current: number | null = null;
  try {
    const body = (await response.json()) as { detail?: string; current_revision?: number | null };
    detail = body.detail ?? detail;
    current = body.current_revision ?? null;
  } catch {
    // not JSON: keep the status line
  }
  throw response.status === 409 ? new ConflictError(detail, current) : new ApiError(detail, response.status);
}

/** Client of the review endpoints (`/api/review/...`). */
export class ReviewApi {
  async getTask(taskId: number): Promise<ReviewPayload> {
    return (await check(await fetch(`${REVIEW_ROOT}/tasks/${taskId}/`, { credentials: "same-origin", headers: csrfHeaders() }))).json();
  }

  getDifference(taskId: number): Promise<Labelmap> {
    return fetchMask(`${REVIEW_ROOT}/tasks/${taskId}/difference`);
  }

  private async post(url: string, body: object): Promise<ReviewDecisionResult> {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", headers: csrfHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
    return (await check(response)).json();
  }

  approve(taskId: number, revision: number): Promise<ReviewDecisionResult> {
    return this.post(`${REVIEW_ROOT}/tasks/${taskId}/approve`, { revision });
  }

  adjudicate(taskId: number, revision: number): Promise<ReviewDecisionResult> {
    return this.post(`${REVIEW_ROOT}/tasks/${taskId}/adjudicate`, { revision });
  }

  returnTask(taskId: number, revision: number, comment: string): Promise<ReviewDecisionResult> {
    if (!comment.trim()) return Promise.reject(new ApiError("Say what the annotator should change.", 400));
    return this.post(`${REVIEW_ROOT}/tasks/${taskId}/return`, { revision, comment });
  }

  async editAndApprove(taskId: number, revision: number, mask: Labelmap, comment = ""): Promise<ReviewDecisionResult> {
    const encoded = await encodeMask(mask.data);
    const response = await fetch(`${REVIEW_ROOT}/tasks/${taskId}/edit-approve`, {
      method: "POST",
      credentials: "same-origin",
      headers: csrfHeaders({
        "Content-Type": "application/octet-stream", "X-Shape": formatShapeHeader(mask.shape), "X-Dtype": "uint8",
        "X-Parent-Revision": String(revision),
        ...(encoded.encoding === "gzip" ? { "Content-Encoding": "gzip" } : { "X-Mask-Encoding": encoded.encoding }),
        ...(comment ? { "X-Comment": encodeURIComponent(comment) } : {}),
      }),
      body: encoded.body as BodyInit,
    });
    return (await check(response)).json();
  }
}

/** The proposal outline and the added/removed difference as viewer overlays. */
export function reviewOverlays(proposal: Labelmap | null, difference: Labelmap | null, firstReading: Labelmap | null = null): OverlayOptions[] {
  const overlays: OverlayOptions[] = [];
  if (firstReading) {
    overlays.push({ name: "first reading", labelmap: firstReading, outline: true,
      colors: [[0, 0, 0, 0], OVERLAY_COLORS.firstReading, OVERLAY_COLORS.firstReading] });
  }
  if (proposal) {
    overlays.push({ name: "proposal", labelmap: proposal, outline: true,
      colors: [[0, 0, 0, 0], OVERLAY_COLORS.proposal, OVERLAY_COLORS.proposal] });
  }
  if (difference) {
    overlays.push({ name: "difference", labelmap: difference, fillAlpha: 0.8,
      colors: [[0, 0, 0, 0], OVERLAY_COLORS.added, OVERLAY_COLORS.removed] });
  }
  return overlays;
}

function fmt(value: number | null | undefined, digits = 3): string {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

/** The side panel: who did what, how far the mask moved, QC flags, history. */
function describe(task: ReviewPayload): HTMLElement {
  const panel = el("aside", { class: "rv-panel", "aria-label": "Review details", "data-testid": "review-details" });
  const final = task.final;
  panel.append(el("h2", {}, `Task ${task.id} · ${task.modality}`));
  if (final) {
    panel.append(el("p", {}, `Revision ${final.number} by ${final.author ?? "the model"} (${final.status})`));
    if (final.note) panel.append(el("p", { class: "rv-note" }, `Note: ${final.note}`));
  }
  const m = task.measure;
  const table = el("table", { class: "rv-measure", "data-testid": "edit-measure" });
  const rows: [string, string][] = m ? [
    ["Pixels added", String(m.added)], ["Pixels removed", String(m.removed)], ["Changed side", String(m.relabelled)],
    ["Changed fraction", `${(m.changed_fraction * 100).toFixed(2)} %`],
    ["Dice right / left", `${fmt(m.dice_right)} / ${fmt(m.dice_left)}`],
    ["HD95 right / left", `${fmt(m.hd95_right, 1)} / ${fmt(m.hd95_left, 1)} ${m.hd95_unit}`],
  ] : [["Against the proposal", "no proposal to compare"]];
  if (task.proposal) rows.unshift(["Proposal", `revision ${task.proposal.number} (${task.proposal.model ?? task.proposal.method}, confidence ${fmt(task.proposal.confidence)})`]);
  rows.forEach(([k, v]) => {
    const tr = el("tr");
    tr.append(el("th", { scope: "row" }, k), el("td", {}, v));
    table.append(tr);
  });
  panel.append(table);
  const pair = task.double_read;
  if (pair) {
    panel.append(el("h3", {}, "Double reading: adjudicate"));
    const agreement = el("p", { "data-testid": "agreement" },
      `Reading 1 by ${pair.first.author} (blue outline) and reading 2 by ${pair.second.author} (the mask) agree with mean Dice ${fmt(pair.dice)} `
      + `(right ${fmt(pair.dice_right)}, left ${fmt(pair.dice_left)}; HD95 ${fmt(pair.hd95_right, 1)} / ${fmt(pair.hd95_left, 1)} ${pair.hd95_unit}), `
      + `below the project's threshold ${fmt(pair.threshold)}. Choose one, or edit and approve.`);
    panel.append(agreement);
  }
  const legend = el("p", { class: "rv-legend" });
  legend.innerHTML = '<span class="rv-swatch" style="border:2px solid rgb(240,228,66)"></span> proposal outline '
    + '<span class="rv-swatch" style="background:rgb(0,158,115)"></span> added '
    + '<span class="rv-swatch" style="background:rgb(204,121,167)"></span> removed';
  panel.append(legend);
  panel.append(el("h3", {}, "QC flags"));
  const flags = el("ul", { "data-testid": "qc-flags" });
  task.flags.forEach((f) => flags.append(el("li", {}, `${f.name}: ${f.message}`)));
  if (task.flags.length === 0) flags.append(el("li", { class: "muted" }, "none"));
  panel.append(flags);
  panel.append(el("h3", {}, "History"));
  const history = el("ol", { "data-testid": "history" });
  task.history.forEach((e) => history.append(el("li", {},
    `${new Date(e.at).toLocaleString()}: ${e.who} ${e.what} (revision ${e.revision})${e.comment ? ` — “${e.comment}”` : ""}`)));
  panel.append(history);
  return panel;
}

/** Mount the review page for `options.taskId` into `root`. */
export async function mountReviewPage(root: HTMLElement, options: ReviewPageOptions): Promise<ReviewPage> {
  const api = new ReviewApi();
  const page: ReviewPage = { taskId: options.taskId, phase: "loading", task: null, mounted: null, result: null, timings: {} };
  root.classList.add("pa-page", "rv-page");
  const top = el("p", { class: "pa-outcome", role: "status", "data-testid": "outcome" });
  top.hidden = true;
  const body = el("div", { class: "rv-body" });
  const viewerRoot = el("div", { class: "pa-viewer" });
  body.append(viewerRoot);
  const bar = el("div", { class: "pa-actions", role: "group", "aria-label": "Review actions" });
  const approve = el("button", { type: "button", "data-action": "approve", "data-primary": "true" }, "Approve");
  const giveBack = el("button", { type: "button", "data-action": "return", "aria-haspopup": "dialog" }, "Return to annotator…");
  const toggles = el("span", { class: "rv-toggles" });
  const notice = el("span", { class: "pa-notice", role: "status", "aria-live": "polite", "data-testid": "notice" });
  bar.append(approve, giveBack, toggles, notice);
  const dialog = el("dialog", { class: "pa-dialog", "aria-labelledby": "rv-return-title", "data-testid": "return-dialog" });
  const comment = el("textarea", { rows: "4", "aria-label": "Comment for the annotator", "data-testid": "return-comment" });
  const dialogError = el("p", { class: "pa-error", role: "alert" });
  const send = el("button", { type: "button", "data-action": "send-return" }, "Return with this comment");
  const cancel = el("button", { type: "button" }, "Cancel");
  const buttons = el("div", { class: "pa-dialog-buttons" });
  buttons.append(cancel, send);
  dialog.append(el("h2", { id: "rv-return-title" }, "Return to the annotator"), el("p", {}, "What should be changed?"), comment, dialogError, buttons);
  root.replaceChildren(top, body, bar, dialog);

  const setPhase = (phase: ReviewPage["phase"]): void => {
    page.phase = phase;
    root.dataset.pageState = phase;
    bar.querySelectorAll("button").forEach((b) => { b.disabled = phase !== "ready"; });
  };
  const notify = (text: string, kind: "info" | "error" = "info"): void => {
    notice.textContent = text;
    notice.dataset.kind = kind;
  };
  const finish = (result: ReviewDecisionResult, text: string): void => {
    page.result = result;
    setPhase("done");
    page.mounted?.viewer.lock();
    top.hidden = false;
    top.dataset.kind = "done";
    const back = el("a", { href: options.queueUrl ?? "/review/" }, "Back to the review queue");
    top.replaceChildren(el("strong", {}, text), " ", back);
  };
  setPhase("loading");
  try {
    const task = await api.getTask(options.taskId);
    page.task = task;
    if (!task.final) throw new ApiError("This task has no revision to review.", 404);
    const [final, proposal, difference, firstReading] = await Promise.all([
      fetchMask(`/api/annotation/revisions/${task.final.id}/mask`),
      task.proposal ? fetchMask(`/api/annotation/revisions/${task.proposal.id}/mask`) : Promise.resolve(null),
      task.proposal ? api.getDifference(task.id) : Promise.resolve(null),
      task.double_read ? fetchMask(`/api/annotation/revisions/${task.double_read.first.id}/mask`) : Promise.resolve(null),
    ]);
    body.append(describe(task));
    page.mounted = await mountViewer(viewerRoot, {
      imageIds: instanceImageIds(task), modality: task.modality, labelmap: final, readOnly: task.status !== "in_review",
      overlays: reviewOverlays(proposal, difference, firstReading),
      onChange: () => {
        const edited = (page.mounted?.viewer.getEditCount() ?? 0) > 0;
        approve.textContent = edited ? "Approve with my edits" : task.double_read ? `Choose reading 2 (${task.double_read.second.author})` : "Approve";
        approve.dataset.edited = String(edited);
      },
    });
    page.mounted.viewer.setTool("pan");
    page.timings.shown = performance.now();
    for (const name of ["first reading", "proposal", "difference"]) {
      if ({ "first reading": firstReading, proposal, difference }[name] === null) continue;
      const id = `rv-${name.replace(" ", "-")}`;
      const box = el("input", { type: "checkbox", checked: "", "data-overlay": name, id });
      box.addEventListener("change", () => page.mounted?.viewer.setOverlayVisible(name, box.checked));
      const label = el("label", { for: id }, name === "proposal" ? " proposal outline" : ` ${name}`);
      toggles.append(box, label);
    }
    if (task.status !== "in_review") {
      setPhase("done");
      top.hidden = false;
      top.textContent = `This task is ${task.status.replace("_", " ")}: nothing to decide.`;
      return page;
    }
    setPhase("ready");
  } catch (err) {
    setPhase("error");
    notify(err instanceof Error ? err.message : String(err), "error");
    throw err;
  }
  const task = page.task!;
  const revision = task.final!.id;
  const pair = task.double_read;
  let chooseFirst: HTMLButtonElement | null = null;
  if (pair) {
    giveBack.hidden = true;  // a pair below the threshold is settled here, not returned
    approve.textContent = `Choose reading 2 (${pair.second.author})`;
    chooseFirst = el("button", { type: "button", "data-action": "choose-first" }, `Choose reading 1 (${pair.first.author})`);
    approve.after(chooseFirst);
    chooseFirst.addEventListener("click", () => {
      void act(() => api.adjudicate(task.id, pair.first.id), (r) => `Adjudicated: reading 1 (revision ${r.curated_revision}) is curated.`);
    });
  }
  const act = async (run: () => Promise<ReviewDecisionResult>, done: (r: ReviewDecisionResult) => string): Promise<void> => {
    setPhase("saving");
    try {
      const result = await run();
      finish(result, done(result));
    } catch (err) {
      setPhase("ready");
      const text = err instanceof ConflictError ? `${err.message}` : err instanceof Error ? err.message : String(err);
      notify(text, "error");
    }
  };
  approve.addEventListener("click", () => {
    const viewer = page.mounted!.viewer;
    if (viewer.getEditCount() > 0) {
      void act(() => api.editAndApprove(task.id, revision, viewer.getLabelmap()),
        (r) => `Approved with your edits: revision ${r.curated_revision} is curated.`);
    } else {
      void act(() => (pair ? api.adjudicate(task.id, pair.second.id) : api.approve(task.id, revision)),
        (r) => (r.decision === "confirm_reject" ? "Rejection confirmed." : `Approved: revision ${task.final!.number} is curated.`));
    }
  });
  giveBack.addEventListener("click", () => {
    dialogError.textContent = "";
    dialog.showModal();
    comment.focus();
  });
  cancel.addEventListener("click", () => dialog.close());
  send.addEventListener("click", () => {
    if (!comment.value.trim()) {
      dialogError.textContent = "Say what the annotator should change.";
      return;
    }
    dialog.close();
    void act(() => api.returnTask(task.id, revision, comment.value), () => `Returned to ${task.final!.author} with your comment.`);
  });
  return page;
}
