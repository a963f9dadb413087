/**
 * Compact encodings for uint8 label masks of shape (D, H, W).
 *
 * - gzip through the browser's CompressionStream (the preferred wire format;
 *   the server sees an ordinary `Content-Encoding: gzip` body);
 * - a byte run-length encoding ("rle-v1") for browsers without CompressionStream:
 *   a sequence of (value: uint8, runLength: unsigned LEB128 varint) pairs;
 * - slice-level diffs so that a CT edit uploads only the slices that changed.
 */

/** (D, H, W): slices, rows, columns. */
export type MaskShape = [number, number, number];

export class MaskCodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MaskCodecError";
  }
}

export function voxelCount(shape: MaskShape): number {
  return shape[0] * shape[1] * shape[2];
}

export function sliceSize(shape: MaskShape): number {
  return shape[1] * shape[2];
}

/** Parse an `X-Shape` header ("D,H,W" or "H,W") into (D, H, W). */
export function parseShapeHeader(value: string | null): MaskShape {
  if (!value) {
    throw new MaskCodecError("The mask response has no X-Shape header (expected 'D,H,W').");
  }
  const parts = value.split(",").map((p) => Number.parseInt(p.trim(), 10));
  if (parts.some((p) => !Number.isInteger(p) || p <= 0) || parts.length < 2 || parts.length > 3) {
    throw new MaskCodecError(`X-Shape '${value}' is not 2 or 3 positive integers separated by commas.`);
  }
  return (parts.length === 2 ? [1, parts[0], parts[1]] : parts) as MaskShape;
}

export function formatShapeHeader(shape: MaskShape): string {
  return shape.join(",");
}

export function hasCompressionStream(): boolean {
  return typeof CompressionStream === "function" && typeof DecompressionStream === "function";
}

async function transform(data: Uint8Array, stream: ReadableWritablePair<Uint8Array, Uint8Array>): Promise<Uint8Array> {
  const piped = new Blob([data as BlobPart]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(piped).arrayBuffer());
}

/** gzip a byte array with the platform's CompressionStream. */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  if (!hasCompressionStream()) {
    throw new MaskCodecError("This browser has no CompressionStream; use the rle-v1 encoding instead.");
  }
  return transform(data, new CompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>);
}

/** Inverse of {@link gzip}. */
export async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  if (!hasCompressionStream()) {
    throw new MaskCodecError("This browser has no DecompressionStream to read a gzip mask.");
  }
  try {
    return await transform(data, new DecompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>);
  } catch (err) {
    throw new MaskCodecError(`The mask is not valid gzip data: ${String(err)}`);
  }
}

/** Run-length encode bytes as (value, LEB128 run length) pairs. */
export function rleEncode(data: Uint8Array): Uint8Array {
  const out: number[] = [];
  let i = 0;
  while (i < data.length) {
    const value = data[i];
    let run = 1;
    while (i + run < data.length && data[i + run] === value) run++;
    out.push(value);
    let rest = run;
    while (rest >= 0x80) {
      out.push((rest & 0x7f) | 0x80);
      rest = Math.floor(rest / 128);
    }
    out.push(rest);
    i += run;
  }
  return Uint8Array.from(out);
}

/** Decode {@link rleEncode} output; `expectedLength` guards against truncated or foreign data. */
export function rleDecode(encoded: Uint8Array, expectedLength: number): Uint8Array {
  const out = new Uint8Array(expectedLength);
  let pos = 0;
  let i = 0;
  while (i < encoded.length) {
    const value = encoded[i++];
    let run = 0;
    let scale = 1;
    for (;;) {
      if (i >= encoded.length) throw new MaskCodecError("rle-v1 data ends inside a run length.");
      const byte = encoded[i++];
      run += (byte & 0x7f) * scale;
      if (byte < 0x80) break;
      scale *= 128;
    }
    if (pos + run > expectedLength) {
      throw new MaskCodecError(`rle-v1 data decodes to more than the expected ${expectedLength} bytes.`);
    }
    out.fill(value, pos, pos + run);
    pos += run;
  }
  if (pos !== expectedLength) {
    throw new MaskCodecError(`rle-v1 data decodes to ${pos} bytes, expected ${expectedLength}.`);
  }
  return out;
}

export type MaskEncoding = "gzip" | "rle-v1";

export interface EncodedMask {
  encoding: MaskEncoding;
  body: Uint8Array;
}

/** Encode with gzip where the platform can, else rle-v1. */
export async function encodeMask(data: Uint8Array): Promise<EncodedMask> {
  if (hasCompressionStream()) return { encoding: "gzip", body: await gzip(data) };
  return { encoding: "rle-v1", body: rleEncode(data) };
}

/** Decode a body in the given encoding and check it holds exactly `expectedLength` voxels. */
export async function decodeMask(body: Uint8Array, encoding: MaskEncoding | "identity", expectedLength: number): Promise<Uint8Array> {
  const data = encoding === "gzip" ? await gunzip(body) : encoding === "rle-v1" ? rleDecode(body, expectedLength) : body;
  if (data.length !== expectedLength) {
    throw new MaskCodecError(`The mask holds ${data.length} voxels but its shape needs ${expectedLength}.`);
  }
  return data;
}

/** Indices of the slices (along D) where `after` differs from `before`. */
export function changedSlices(before: Uint8Array, after: Uint8Array, shape: MaskShape): number[] {
  const n = voxelCount(shape);
  if (before.length !== n || after.length !== n) {
    throw new MaskCodecError(`changedSlices: arrays of ${before.length} and ${after.length} voxels do not match shape ${shape.join("×")}.`);
  }
  const size = sliceSize(shape);
  const changed: number[] = [];
  for (let z = 0; z < shape[0]; z++) {
    const start = z * size;
    for (let i = start; i < start + size; i++) {
      if (before[i] !== after[i]) {
        changed.push(z);
        break;
      }
    }
  }
  return changed;
}

/** Concatenate the given slices of `data`, in the order given. */
export function extractSlices(data: Uint8Array, shape: MaskShape, slices: readonly number[]): Uint8Array {
  const size = sliceSize(shape);
  const out = new Uint8Array(size * slices.length);
  slices.forEach((z, k) => {
    if (!Number.isInteger(z) || z < 0 || z >= shape[0]) {
      throw new MaskCodecError(`Slice index ${z} is outside 0..${shape[0] - 1}.`);
    }
    out.set(data.subarray(z * size, (z + 1) * size), k * size);
  });
  return out;
}

/** Write concatenated slices (as made by {@link extractSlices}) into a copy of `base`. */
export function applySlices(base: Uint8Array, shape: MaskShape, slices: readonly number[], payload: Uint8Array): Uint8Array {
  const size = sliceSize(shape);
  if (payload.length !== size * slices.length) {
    throw new MaskCodecError(`The payload has ${payload.length} bytes; ${slices.length} slices of ${size} need ${size * slices.length}.`);
  }
  const out = base.slice();
  slices.forEach((z, k) => {
    if (!Number.isInteger(z) || z < 0 || z >= shape[0]) {
      throw new MaskCodecError(`Slice index ${z} is outside 0..${shape[0] - 1}.`);
    }
    out.set(payload.subarray(k * size, (k + 1) * size), z * size);
  });
  return out;
}

/** Format slice indices for the `X-Slices` header. */
export function formatSlicesHeader(slices: readonly number[]): string {
  return slices.join(",");
}

export function parseSlicesHeader(value: string): number[] {
  if (value.trim() === "") return [];
  return value.split(",").map((p) => {
    const z = Number.parseInt(p.trim(), 10);
    if (!Number.isInteger(z) || z < 0) throw new MaskCodecError(`X-Slices entry '${p}' is not a slice index.`);
    return z;
  });
}

/**
 * Slices worth sending for an edit: the changed ones when they are at most `maxFraction`
 * of a multi-slice mask, else undefined (send the whole mask).
 */
export function chooseUploadSlices(shape: MaskShape, changed: readonly number[], maxFraction = 0.5): number[] | undefined {
  if (shape[0] <= 1 || changed.length === 0) return undefined;
  return changed.length <= shape[0] * maxFraction ? [...changed] : undefined;
}
