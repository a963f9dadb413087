/**
 * Lung-mask label values and their display colours.
 *
 * Label values are fixed by the mask format shared with the backend and `ml/`:
 * 0 background, 1 the patient's right lung, 2 the patient's left lung.
 * Colours come from the Okabe–Ito palette, which stays distinguishable for
 * protanopia, deuteranopia and tritanopia.
 */

export type LabelValue = 1 | 2;

export interface LabelInfo {
  value: LabelValue;
  name: string;
  /** CSS hex colour. */
  hex: string;
  /** RGBA, 0–255. */
  rgba: [number, number, number, number];
}

export const LABELS: Readonly<Record<LabelValue, LabelInfo>> = {
  1: { value: 1, name: "Right lung", hex: "#0072B2", rgba: [0, 114, 178, 255] },
  2: { value: 2, name: "Left lung", hex: "#E69F00", rgba: [230, 159, 0, 255] },
};

/** Colour lookup table indexed by label value (index 0 transparent). */
export function labelColorLUT(): [number, number, number, number][] {
  return [[0, 0, 0, 0], LABELS[1].rgba, LABELS[2].rgba];
}

export function isLabelValue(value: number): value is LabelValue {
  return value === 1 || value === 2;
}
