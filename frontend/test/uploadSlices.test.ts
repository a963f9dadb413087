import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseUploadSlices } from "../src/maskCodec.js";

test("CT edits on few slices upload only those slices", () => {
  assert.deepEqual(chooseUploadSlices([100, 4, 4], [10, 11]), [10, 11]);
  assert.deepEqual(chooseUploadSlices([100, 4, 4], Array.from({ length: 50 }, (_, i) => i))?.length, 50);
});

test("X-rays, unchanged masks and edits on most slices upload the whole mask", () => {
  assert.equal(chooseUploadSlices([1, 4, 4], [0]), undefined);
  assert.equal(chooseUploadSlices([10, 4, 4], []), undefined);
  assert.equal(chooseUploadSlices([10, 4, 4], [0, 1, 2, 3, 4, 5]), undefined);
});
