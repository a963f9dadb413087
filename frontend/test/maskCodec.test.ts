import { test } from "node:test";
import assert from "node:assert/strict";
import {
  applySlices,
  changedSlices,
  decodeMask,
  encodeMask,
  extractSlices,
  gunzip,
  gzip,
  MaskCodecError,
  parseShapeHeader,
  parseSlicesHeader,
  rleDecode,
  rleEncode,
  type MaskShape,
} from "../src/maskCodec.js";

test("rle-v1 encodes runs as value + LEB128 length", () => {
  const data = Uint8Array.from([0, 0, 0, 1, 2, 2]);
  assert.deepEqual(Array.from(rleEncode(data)), [0, 3, 1, 1, 2, 2]);
});

test("rle-v1 uses multi-byte lengths above 127", () => {
  const data = new Uint8Array(300).fill(1);
  // 300 = 0b1_0010_1100 -> 0xAC (low 7 bits 0x2C | 0x80), 0x02
  assert.deepEqual(Array.from(rleEncode(data)), [1, 0xac, 0x02]);
  assert.deepEqual(rleDecode(rleEncode(data), 300), data);
});

test("rle-v1 round-trips a mask with both labels", () => {
  const data = new Uint8Array(64 * 64);
  for (let i = 500; i < 900; i++) data[i] = 1;
  for (let i = 2000; i < 2100; i++) data[i] = 2;
  assert.deepEqual(rleDecode(rleEncode(data), data.length), data);
});

test("rle-v1 rejects data of the wrong length", () => {
  const encoded = rleEncode(new Uint8Array(10));
  assert.throws(() => rleDecode(encoded, 9), MaskCodecError);
  assert.throws(() => rleDecode(encoded, 11), MaskCodecError);
  assert.throws(() => rleDecode(Uint8Array.from([1, 0x80]), 1), MaskCodecError);
});

test("gzip round-trips and compresses a mostly-empty mask", async () => {
  const data = new Uint8Array(256 * 256);
  data.fill(1, 10000, 20000);
  const packed = await gzip(data);
  assert.equal(packed[0], 0x1f); // gzip magic
  assert.equal(packed[1], 0x8b);
  assert.ok(packed.length < data.length / 50, `gzip gave ${packed.length} bytes`);
  assert.deepEqual(await gunzip(packed), data);
});

test("gunzip reports corrupt input as MaskCodecError", async () => {
  await assert.rejects(gunzip(Uint8Array.from([1, 2, 3, 4])), MaskCodecError);
});

test("encodeMask/decodeMask round-trip and check the voxel count", async () => {
  const data = Uint8Array.from([0, 1, 1, 2, 2, 0]);
  const enc = await encodeMask(data);
  assert.equal(enc.encoding, "gzip");
  assert.deepEqual(await decodeMask(enc.body, enc.encoding, 6), data);
  await assert.rejects(decodeMask(enc.body, enc.encoding, 7), MaskCodecError);
  assert.deepEqual(await decodeMask(rleEncode(data), "rle-v1", 6), data);
  assert.deepEqual(await decodeMask(data, "identity", 6), data);
});

test("X-Shape header: 3-D, 2-D and bad values", () => {
  assert.deepEqual(parseShapeHeader("5, 64,32"), [5, 64, 32]);
  assert.deepEqual(parseShapeHeader("64,32"), [1, 64, 32]);
  assert.throws(() => parseShapeHeader(null), MaskCodecError);
  assert.throws(() => parseShapeHeader("5,0,3"), MaskCodecError);
  assert.throws(() => parseShapeHeader("a,b"), MaskCodecError);
});

test("changedSlices finds exactly the edited slices", () => {
  const shape: MaskShape = [4, 2, 3];
  const before = new Uint8Array(24);
  const after = before.slice();
  after[1 * 6 + 5] = 1; // slice 1, last voxel
  after[3 * 6 + 0] = 2; // slice 3, first voxel
  assert.deepEqual(changedSlices(before, after, shape), [1, 3]);
  assert.deepEqual(changedSlices(before, before, shape), []);
  assert.throws(() => changedSlices(before, new Uint8Array(5), shape), MaskCodecError);
});

test("extractSlices + applySlices rebuild the edited volume from a parent", () => {
  const shape: MaskShape = [3, 2, 2];
  const parent = Uint8Array.from([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
  const edited = parent.slice();
  edited.set([2, 0, 0, 2], 8);
  const slices = changedSlices(parent, edited, shape);
  assert.deepEqual(slices, [2]);
  const payload = extractSlices(edited, shape, slices);
  assert.deepEqual(Array.from(payload), [2, 0, 0, 2]);
  assert.deepEqual(applySlices(parent, shape, slices, payload), edited);
  assert.throws(() => applySlices(parent, shape, [0, 1], payload), MaskCodecError);
  assert.throws(() => extractSlices(parent, shape, [3]), MaskCodecError);
});

test("X-Slices header parsing", () => {
  assert.deepEqual(parseSlicesHeader("3, 4,10"), [3, 4, 10]);
  assert.deepEqual(parseSlicesHeader(""), []);
  assert.throws(() => parseSlicesHeader("1,x"), MaskCodecError);
});
