import { test } from "node:test";
import assert from "node:assert/strict";
import { Autosaver, installLeaveGuard, type AutosaveState } from "../src/autosave.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A stand-in for the viewer: counts edits, tracks the dirty flag. */
class FakeViewer {
  edits = 0;
  dirty = false;
  saved = 0;
  edit(): void {
    this.edits++;
    this.dirty = true;
  }
  isDirty(): boolean {
    return this.dirty;
  }
  getEditCount(): number {
    return this.edits;
  }
  markSaved(): void {
    this.dirty = false;
    this.saved++;
  }
}

function recorder(): { states: AutosaveState[]; onStateChange: (s: AutosaveState) => void } {
  const states: AutosaveState[] = [];
  return { states, onStateChange: (s) => states.push(s) };
}

test("edits within the delay coalesce into one save after inactivity", async () => {
  const viewer = new FakeViewer();
  let saves = 0;
  const rec = recorder();
  const auto = new Autosaver(viewer, async () => void saves++, { delayMs: 30, onStateChange: rec.onStateChange });
  for (let i = 0; i < 3; i++) {
    viewer.edit();
    auto.notifyEdit();
    await sleep(10);
  }
  assert.equal(saves, 0, "saved before the user paused");
  await sleep(60);
  assert.equal(saves, 1);
  assert.equal(viewer.dirty, false);
  assert.equal(auto.state, "saved");
  assert.deepEqual(rec.states.slice(-2), ["saving", "saved"]);
});

test("an edit made while saving keeps the viewer dirty and triggers another save", async () => {
  const viewer = new FakeViewer();
  let saves = 0;
  const auto = new Autosaver(
    viewer,
    async () => {
      saves++;
      if (saves === 1) viewer.edit(); // the user paints during the upload
      await sleep(5);
    },
    { delayMs: 20 },
  );
  viewer.edit();
  auto.notifyEdit();
  await sleep(35);
  assert.equal(saves, 1);
  assert.equal(viewer.dirty, true, "marked saved although an edit arrived during the save");
  await sleep(50);
  assert.equal(saves, 2);
  assert.equal(viewer.dirty, false);
});

test("a 409 stops autosave and reports the conflict until resumed", async () => {
  const viewer = new FakeViewer();
  let saves = 0;
  let conflicts = 0;
  let fail = true;
  const auto = new Autosaver(
    viewer,
    async () => {
      saves++;
      if (fail) throw Object.assign(new Error("Someone saved a newer revision."), { status: 409 });
    },
    { delayMs: 10, onConflict: () => void conflicts++ },
  );
  viewer.edit();
  auto.notifyEdit();
  await sleep(30);
  assert.equal(auto.state, "conflict");
  assert.equal(conflicts, 1);
  viewer.edit();
  auto.notifyEdit();
  await sleep(30);
  assert.equal(saves, 1, "kept saving after a conflict");
  fail = false;
  auto.resume();
  await sleep(30);
  assert.equal(saves, 2);
  assert.equal(auto.state, "saved");
});

test("other errors are shown and retried", async () => {
  const viewer = new FakeViewer();
  let saves = 0;
  const messages: string[] = [];
  const auto = new Autosaver(
    viewer,
    async () => {
      saves++;
      if (saves === 1) throw new Error("network down");
    },
    { delayMs: 5, retryMs: 20, onStateChange: (_s, m) => messages.push(m) },
  );
  viewer.edit();
  auto.notifyEdit();
  await sleep(15);
  assert.equal(auto.state, "error");
  assert.ok(messages.some((m) => m.includes("network down")));
  await sleep(40);
  assert.equal(saves, 2);
  assert.equal(auto.state, "saved");
});

test("flush saves at once and does nothing when clean", async () => {
  const viewer = new FakeViewer();
  let saves = 0;
  const auto = new Autosaver(viewer, async () => void saves++, { delayMs: 10_000 });
  await auto.flush();
  assert.equal(saves, 0);
  viewer.edit();
  auto.notifyEdit();
  await auto.flush();
  assert.equal(saves, 1);
  assert.equal(viewer.dirty, false);
  auto.stop();
});

test("the leave guard asks for confirmation only with unsaved changes", () => {
  const target = new EventTarget();
  let unsaved = false;
  const remove = installLeaveGuard(() => unsaved, target as unknown as Window);
  // Browsers' BeforeUnloadEvent has a writable returnValue; Node's Event does not.
  class BeforeUnload extends Event {
    override returnValue: boolean = true;
  }
  const fire = () => {
    const event = new BeforeUnload("beforeunload", { cancelable: true });
    target.dispatchEvent(event);
    return event.defaultPrevented;
  };
  assert.equal(fire(), false);
  unsaved = true;
  assert.equal(fire(), true);
  remove();
  assert.equal(fire(), false);
});
