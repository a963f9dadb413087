/**
 * Typed client for the annotation REST API the viewer page uses (contract: docs/viewer-api.md).
 *
 * Masks travel as raw uint8 (D, H, W) in C order with `X-Shape: D,H,W` and `X-Dtype: uint8`,
 * gzip-compressed on upload (`Content-Encoding: gzip`, or `X-Mask-Encoding: rle-v1` where the
 * browser has no CompressionStream). Every write names the revision it was made from
 * (`X-Parent-Revision`); the server answers 409 when that is no longer the task's latest.
 */
import {
  decodeMask,
  encodeMask,
  extractSlices,
  formatShapeHeader,
  formatSlicesHeader,
  parseShapeHeader,
  type MaskEncoding,
} from "./maskCodec";
import type { Labelmap } from "./viewer";

export const API_ROOT = "/api/annotation";

/** Endpoint paths; `{id}` parts are filled by these helpers. */
export const ENDPOINTS = {
  /** GET: task JSON ({@link TaskPayload}). */
  task: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/`,
  /** GET: the mask of one revision, raw uint8. */
  revisionMask: (revisionId: number | string) => `${API_ROOT}/revisions/${revisionId}/mask`,
  /** GET: the caller's draft mask (404 when none); PUT: save the draft. */
  draft: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/draft`,
  /** POST: submit edits as a new MaskRevision (body: mask). */
  submit: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/submit`,
  /** POST JSON {parent_revision}: accept the parent revision unchanged. */
  accept: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/accept`,
  /** POST JSON {parent_revision, reason, text}: reject with a reason code (text required for "other"). */
  reject: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/reject`,
  /** POST: claim the task (or renew the caller's lease); answers the TaskPayload, 423 while someone else holds it. */
  claim: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/claim`,
  /** POST: give the caller's claim up. */
  release: (taskId: number | string) => `${API_ROOT}/tasks/${taskId}/release`,
} as const;

export interface InstancePayload {
  sop_instance_uid: string;
  /** WADO-URI URL of the DICOM instance, e.g. `/wado?requestType=WADO&...&contentType=application/dicom`. */
  url: string;
}

export interface DraftPayload {
  parent_revision: number | null;
  saved_at: string;
  /** Slices stored in the draft; null when the draft holds the whole mask. */
  slices: number[] | null;
}

/** The task's latest revision and the accept/submit/reject that created it, if any. */
export interface RevisionSummary {
  id: number;
  /** Position in the target's lineage (1, 2, …). */
  number?: number;
  /** How it was made: `model`, `manual`, `accepted`, `rejected`, … */
  kind: string;
  created_at: string;
  author: string | null;
  /** The annotator's action that created it (`accept`, `submit`, `reject`); null for a model proposal. */
  action?: "accept" | "submit" | "reject" | null;
  /** Rejection reason label (e.g. "Unreadable image"), and the annotator's text. */
  reason?: string | null;
  reason_text?: string;
}

export interface TaskPayload {
  id: number;
  status: string;
  modality: string;
  /** Instances in mask slice order (D). */
  instances: InstancePayload[];
  /** Shape (D, H, W) of the task's masks. */
  shape: [number, number, number];
  /** Latest revision of the task's mask, or null when none exists yet. */
  revision: RevisionSummary | null;
  /** The caller's autosaved draft, if any. */
  draft: DraftPayload | null;
  /** Who holds the task's lease, and until when (ISO 8601), when someone does. */
  claimed_by?: string | null;
  lease_expires_at?: string | null;
  /** Lease duration, s: claim again well before it runs out. */
  lease_seconds?: number;
  /** Reasons a task may be rejected with. */
  reject_reasons?: { code: string; label: string }[];
  /** What the CT reader corrected in this series (missing slices interpolated, gantry tilt de-sheared). */
  series_warnings?: string[];
  /** While the task is returned to its annotator: the reviewer's comment. */
  returned?: { comment: string; at: string; reviewer: string | null } | null;
  /** The caller's unsubmitted drafts of this task that were kept as revisions because someone else saved over them. */
  kept_drafts?: { revision_id: number; revision_number: number; saved_over_by: string | null; at: string }[];
}

export interface SaveResult {
  /** For submit: the new MaskRevision's id; for drafts: null. */
  revision_id: number | null;
  /** The new revision's number in the target's lineage; null for drafts. */
  revision_number?: number | null;
  saved_at: string;
}

export class ApiError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "ApiError";
  }
}

/** 409: the parent revision is no longer the latest. */
export class ConflictError extends ApiError {
  /** `savedByYou`: the newer revision is the caller's own, saved from another tab or window. */
  constructor(message: string, readonly currentRevision: number | null, readonly savedByYou = false) {
    super(message, 409);
    this.name = "ConflictError";
  }
}

export interface SaveOptions {
  parentRevision: number | null;
  /** Upload only these slices (CT edits); the server copies the rest from the parent revision. */
  slices?: number[];
  comment?: string;
  /** Seconds the user worked on the task (sent as X-Time-Spent). */
  timeSpentS?: number;
}

function cookie(name: string): string | null {
  const match = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return match ? decodeURIComponent(match.slice(name.length + 1)) : null;
}

async function errorFrom(response: Response): Promise<ApiError> {
  let detail = `${response.status} ${response.statusText}`.trim();
  let currentRevision: number | null = null;
  let savedByYou = false;
  try {
    const body = (await response.json()) as { detail?: string; current_revision?: number | null; saved_by_you?: boolean };
    if (body.detail) detail = body.detail;
    currentRevision = body.current_revision ?? null;
    savedByYou = body.saved_by_you ?? false;
  } catch {
    // Not JSON: keep the status line.
  }
  if (response.status === 409) return new ConflictError(detail, currentRevision, savedByYou);
  return new ApiError(detail, response.status);
}

/** Read a mask response: raw uint8 + X-Shape, optionally X-Mask-Encoding gzip|rle-v1. */
export async function readMaskResponse(response: Response): Promise<Labelmap> {
  const shape = parseShapeHeader(response.headers.get("X-Shape"));
  const dtype = response.headers.get("X-Dtype") ?? "uint8";
  if (dtype !== "uint8") throw new ApiError(`The mask has dtype ${dtype}; the viewer needs uint8.`, response.status);
  const encoding = (response.headers.get("X-Mask-Encoding") ?? "identity") as MaskEncoding | "identity";
  const body = new Uint8Array(await response.arrayBuffer());
  const data = await decodeMask(body, encoding, shape[0] * shape[1] * shape[2]);
  return { shape, data };
}

/** Fetch a mask from any URL that follows the mask response format. */
export async function fetchMask(url: string, init: RequestInit = {}): Promise<Labelmap> {
  const response = await fetch(url, { credentials: "same-origin", ...init });
  if (!response.ok) throw await errorFrom(response);
  return readMaskResponse(response);
}

/** Cornerstone image ids for a task's instances, in slice order. */
export function instanceImageIds(task: Pick<TaskPayload, "instances">, base: string = location.href): string[] {
  return task.instances.map((i) => `wadouri:${new URL(i.url, base).href}`);
}

export class PleuraApi {
  constructor(private readonly fetchImpl: typeof fetch = (...args) => fetch(...args)) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const csrf = cookie("csrftoken");
    return { Accept: "application/json", ...(csrf ? { "X-CSRFToken": csrf } : {}), ...extra };
  }

  private async request(url: string, init: RequestInit): Promise<Response> {
    const response = await this.fetchImpl(url, { credentials: "same-origin", ...init });
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async getTask(taskId: number): Promise<TaskPayload> {
    return (await this.request(ENDPOINTS.task(taskId), { headers: this.headers() })).json() as Promise<TaskPayload>;
  }

  async getRevisionMask(revisionId: number): Promise<Labelmap> {
    return readMaskResponse(await this.request(ENDPOINTS.revisionMask(revisionId), { headers: this.headers() }));
  }

  /** The caller's draft, or null when there is none (404). */
  async getDraftMask(taskId: number): Promise<Labelmap | null> {
    try {
      return readMaskResponse(await this.request(ENDPOINTS.draft(taskId), { headers: this.headers() }));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  private async maskRequest(url: string, method: "PUT" | "POST", mask: Labelmap, options: SaveOptions): Promise<SaveResult> {
    const slices = options.slices;
    const payload = slices ? extractSlices(mask.data, mask.shape, slices) : mask.data;
    const encoded = await encodeMask(payload);
    const headers = this.headers({
      "Content-Type": "application/octet-stream",
      "X-Shape": formatShapeHeader(mask.shape),
      "X-Dtype": "uint8",
      "X-Parent-Revision": options.parentRevision === null ? "none" : String(options.parentRevision),
      ...(encoded.encoding === "gzip" ? { "Content-Encoding": "gzip" } : { "X-Mask-Encoding": encoded.encoding }),
      ...(slices ? { "X-Slices": formatSlicesHeader(slices) } : {}),
      ...(options.comment ? { "X-Comment": encodeURIComponent(options.comment) } : {}),
      ...(options.timeSpentS !== undefined ? { "X-Time-Spent": options.timeSpentS.toFixed(1) } : {}),
    });
    const response = await this.request(url, { method, headers, body: encoded.body as BodyInit });
    return (await response.json()) as SaveResult;
  }

  /** Autosave the draft (PUT). Throws ConflictError on 409. */
  saveDraft(taskId: number, mask: Labelmap, options: SaveOptions): Promise<SaveResult> {
    return this.maskRequest(ENDPOINTS.draft(taskId), "PUT", mask, options);
  }

  /** Submit edits as a new MaskRevision (POST). Throws ConflictError on 409. */
  submit(taskId: number, mask: Labelmap, options: SaveOptions): Promise<SaveResult> {
    return this.maskRequest(ENDPOINTS.submit(taskId), "POST", mask, options);
  }

  private async postJson(url: string, body: object): Promise<SaveResult> {
    const response = await this.request(url, {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    return (await response.json()) as SaveResult;
  }

  accept(taskId: number, parentRevision: number, timeSpentS?: number): Promise<SaveResult> {
    return this.postJson(ENDPOINTS.accept(taskId), { parent_revision: parentRevision, time_spent: timeSpentS ?? null });
  }

  /** Reject with a reason code (`unreadable`, `not_chest`, `wrong_modality`, `other`); `other` needs `text`. */
  async reject(taskId: number, parentRevision: number | null, reason: string, text = "", timeSpentS?: number): Promise<SaveResult> {
    if (!reason.trim()) throw new ApiError("A rejection needs a reason.", 400);
    if (reason === "other" && !text.trim()) throw new ApiError("Say why you reject the task.", 400);
    return this.postJson(ENDPOINTS.reject(taskId), { parent_revision: parentRevision, reason, text, time_spent: timeSpentS ?? null });
  }

  /** Claim the task or renew the lease; throws ApiError 423 while someone else holds it. */
  async claim(taskId: number): Promise<TaskPayload> {
    return (await this.request(ENDPOINTS.claim(taskId), { method: "POST", headers: this.headers() })).json() as Promise<TaskPayload>;
  }

  /** Give the claim up (best effort, e.g. when leaving the page): `keepalive` lets it outlive the page. */
  async release(taskId: number): Promise<void> {
    await this.request(ENDPOINTS.release(taskId), { method: "POST", headers: this.headers(), keepalive: true });
  }
}
