// A time chart on uPlot (npm "uplot"): one line per series, sized to its container, redrawn
// in place when the data change. The numbers behind it are always beside it as text; the
// figure's label says what it shows for screen readers.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartSeries {
  label: string;
  values: number[];
}

export interface ChartProps {
  /** Bucket starts, Unix seconds. */
  x: number[];
  series: ChartSeries[];
  /** What the y axis counts ("credits", "requests"). */
  unit: string;
  label: string;
  height?: number;
}

const COLORS = ["#1f4fd1", "#e4572e", "#17a398", "#a15c07", "#7a4bd1", "#d1495b", "#2e86ab", "#5b8c2a"];

function options(width: number, height: number, series: ChartSeries[], unit: string): uPlot.Options {
  return {
    width,
    height,
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { label: unit, size: 70, values: (_u, ticks) => ticks.map((t) => t.toLocaleString(undefined, { maximumFractionDigits: 6 })) }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label.length > 40 ? s.label.slice(0, 39) + "…" : s.label,
        stroke: COLORS[i % COLORS.length] ?? "#1f4fd1",
        width: 2,
        points: { show: true, size: 4 },
      })),
    ],
  };
}

export function Chart({ x, series, unit, label, height = 240 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = useRef("");

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const data: uPlot.AlignedData = [x, ...series.map((s) => s.values)];
    const key = unit + "|" + series.map((s) => s.label).join("|");
    const width = Math.max(200, el.clientWidth);
    if (plot.current && shape.current === key) {
      plot.current.setData(data);
      return;
    }
    plot.current?.destroy();
    shape.current = key;
    plot.current = new uPlot(options(width, height, series, unit), data, el);
  }, [x, series, unit, height]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const resize = new ResizeObserver(() => {
      if (plot.current) plot.current.setSize({ width: Math.max(200, el.clientWidth), height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [height]);

  return <div class="chart" ref={box} role="img" aria-label={label} />;
}
