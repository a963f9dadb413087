/**
 * Dashboard charts with Apache ECharts (pinned 5.6.0), loaded on demand: the dashboard imports this
 * module dynamically, so the annotation and review pages never download the charting code.
 * Only the parts used are registered (bar and line charts, grid, tooltip, legend, canvas).
 */
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([BarChart, LineChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer]);

export interface ChartHint {
  type?: "bar" | "line";
  x?: string;
  series?: string[];
  stack?: boolean;
}

export interface FigureTable {
  name: string;
  title: string;
  columns: string[];
  rows: (string | number | null)[][];
  chart: ChartHint;
  note?: string;
}

/** Okabe–Ito colours, distinguishable with colour-vision deficiencies. */
const PALETTE = ["#56B4E9", "#E69F00", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"];

/** The ECharts option of a figure: its x column against its series columns. */
export function chartOption(figure: FigureTable): echarts.EChartsCoreOption {
  const x = figure.chart.x ?? figure.columns[0];
  const xi = figure.columns.indexOf(x);
  const series = (figure.chart.series ?? figure.columns.slice(1)).filter((c) => figure.columns.includes(c));
  return {
    color: PALETTE,
    animation: false,
    tooltip: { trigger: "axis" },
    legend: { top: 0, textStyle: { color: "#e8eaed" } },
    grid: { left: 48, right: 16, top: 32, bottom: 48, containLabel: true },
    xAxis: { type: "category", data: figure.rows.map((r) => String(r[xi])), axisLabel: { color: "#a4a9b0", hideOverlap: true } },
    yAxis: { type: "value", axisLabel: { color: "#a4a9b0" }, splitLine: { lineStyle: { color: "#33373d" } } },
    series: series.map((name) => {
      const i = figure.columns.indexOf(name);
      return {
        name, type: figure.chart.type ?? "bar", stack: figure.chart.stack ? "total" : undefined,
        data: figure.rows.map((r) => (r[i] === null ? null : Number(r[i]))),
      };
    }),
  };
}

/** Draw a figure's chart into `element`; returns a function that disposes of it. */
export function renderChart(element: HTMLElement, figure: FigureTable): () => void {
  const chart = echarts.init(element, undefined, { renderer: "canvas" });
  chart.setOption(chartOption(figure));
  const observer = new ResizeObserver(() => chart.resize());
  observer.observe(element);
  return () => {
    observer.disconnect();
    chart.dispose();
  };
}
