// Names and numbers for people.
import type { Timestamp, Duration } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { JobStage, JobState } from "./gen/zehanx/gateway/v1/job_pb.js";
import { TaskFamily } from "./gen/zehanx/common/v1/task_family_pb.js";
import { ColumnType } from "./gen/zehanx/common/v1/dataset_pb.js";
import { Provider } from "./gen/zehanx/gateway/v1/account_pb.js";

export const stateName = (s: JobState): string => JobState[s] ?? `STATE_${s}`;
export const stageName = (s: JobStage): string => (s ? JobStage[s] ?? `STAGE_${s}` : "");
export const familyName = (f: TaskFamily): string =>
  (TaskFamily[f] ?? String(f)).toLowerCase().replace(/_/g, " ");
export const columnTypeName = (t: ColumnType): string => (ColumnType[t] ?? String(t)).toLowerCase();
const PROVIDERS: Record<number, string> = { [Provider.GROQ]: "Groq", [Provider.FIRECRAWL]: "Firecrawl", [Provider.E2B]: "E2B" };
export const providerName = (p: Provider): string => PROVIDERS[p] ?? String(p);

export const TERMINAL = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]);

export function when(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toLocaleString();
}

export function seconds(d: Duration | undefined): number {
  if (!d) return 0;
  return Number(d.seconds) + d.nanos / 1e9;
}

export function duration(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} kB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

export function num(v: number | undefined, digits = 4): string {
  if (v === undefined || Number.isNaN(v)) return "";
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(digits);
}
