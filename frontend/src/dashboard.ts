/**
 * The quality dashboard of a project (Django template `workbench/dashboard.html`): fetches every
 * figure from `/api/quality/dashboard/<project>/` with the page's filters (its query string), and
 * shows each as a chart (ECharts, loaded on demand from ./charts), its table, and a CSV download.
 */
import type { FigureTable } from "./charts";

export interface DashboardOptions {
  projectId: number;
  /** Query string of the filters (`from`, `to`, `modality`, `annotator`, `model_version`), without "?". */
  query?: string;
}

export interface Dashboard {
  figures: FigureTable[];
  /** ms since navigation start when every chart was drawn (benchmark). */
  shownAt: number;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text) node.textContent = text;
  return node;
}

function cell(value: string | number | null): string {
  if (value === null) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(6))) : String(value);
}

/** A figure's table, the same numbers as its chart. */
export function figureTable(figure: FigureTable): HTMLTableElement {
  const table = el("table", { class: "queue db-table", "data-testid": `table-${figure.name}` });
  const head = el("tr");
  figure.columns.forEach((c) => head.append(el("th", { scope: "col" }, c)));
  table.append(el("thead"), el("tbody"));
  table.tHead!.append(head);
  figure.rows.forEach((row) => {
    const tr = el("tr");
    row.forEach((v, i) => tr.append(el(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, cell(v))));
    table.tBodies[0].append(tr);
  });
  return table;
}

/** Mount the dashboard into `root`. */
export function mountDashboard(root: HTMLElement, options: DashboardOptions): Promise<Dashboard> {
  const query = options.query ?? "";
  const base = `/api/quality/dashboard/${options.projectId}/`;
  return mountFigures(root, {
    dataUrl: `${base}${query ? `?${query}` : ""}`,
    csvUrl: (name) => `${base}${name}.csv${query ? `?${query}` : ""}`,
  });
}

export interface FiguresOptions {
  /** JSON with `figures` (e.g. the dashboard API, or a patient's lung measures). */
  dataUrl: string;
  /** Where a figure's CSV is downloaded from. */
  csvUrl: (figure: string) => string;
}

/** Fetch figures and show each as a chart, its table and a CSV link (the dashboard and the lung-trend page). */
export async function mountFigures(root: HTMLElement, options: FiguresOptions): Promise<Dashboard> {
  root.dataset.state = "loading";
  const status = el("p", { class: "muted", role: "status" }, "Loading figures…");
  root.replaceChildren(status);
  try {
    const [response, charts] = await Promise.all([
      fetch(options.dataUrl, { credentials: "same-origin", headers: { Accept: "application/json" } }),
      import("./charts"),
    ]);
    const body = (await response.json()) as { detail?: string; figures?: FigureTable[] };
    if (!response.ok || !body.figures) throw new Error(body.detail ?? `${response.status} ${response.statusText}`);
    const sections = body.figures.map((figure) => {
      const section = el("section", { class: "db-figure", "data-figure": figure.name, "aria-labelledby": `db-${figure.name}` });
      const header = el("div", { class: "db-head" });
      header.append(el("h2", { id: `db-${figure.name}` }, figure.title),
        el("a", { href: options.csvUrl(figure.name), download: "", "data-testid": `csv-${figure.name}` }, "CSV"));
      section.append(header);
      if (figure.note) section.append(el("p", { class: "muted db-note" }, figure.note));
      const chart = el("div", { class: "db-chart", role: "img", "aria-label": `${figure.title} (chart; the table below holds the numbers)` });
      section.append(chart);
      const details = el("details", { class: "db-details" });
      details.append(el("summary", {}, "Table"), figureTable(figure));
      section.append(details);
      return { section, chart, figure };
    });
    root.replaceChildren(...sections.map((s) => s.section));
    if (sections.length === 0) root.replaceChildren(el("p", { class: "muted" }, "Nothing to show yet."));
    sections.forEach(({ chart, figure }) => {
      if (figure.rows.length === 0) chart.replaceChildren(el("p", { class: "muted" }, "No data under these filters."));
      else charts.renderChart(chart, figure);
    });
    root.dataset.state = "ready";
    return { figures: body.figures, shownAt: performance.now() };
  } catch (err) {
    root.dataset.state = "error";
    status.textContent = `The dashboard could not be loaded: ${err instanceof Error ? err.message : String(err)}`;
    status.setAttribute("role", "alert");
    root.replaceChildren(status);
    throw err;
  }
}
