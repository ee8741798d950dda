// Dashboard: the prompt box, optional sources (URLs, an uploaded file), options; Train creates the job and
// opens its page. Below: the user's recent jobs and their states.
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { h, field, link, notice, replace, table } from "../dom.js";
import { api, call, errorText } from "../api.js";
import { stageName, stateName, when, seconds } from "../format.js";
import type { JobOptions, JobOptionsSchema } from "../gen/zehanx/gateway/v1/job_pb.js";
import type { DataSourceSchema } from "../gen/zehanx/common/v1/dataset_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PageContext } from "../main.js";

export const DRAFT_KEY = "zx.draft";

export function uuid(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** The option controls shared by the dashboard and the settings page's defaults. */
export interface OptionControls {
  epochs: HTMLInputElement;
  minutes: HTMLInputElement;
  repairs: HTMLInputElement;
  fieldset: HTMLFieldSetElement;
}

export function optionControls(legend: string, defaults?: JobOptions): OptionControls {
  const epochs = h("input", { type: "number", name: "epochs", min: 1, max: 1000, step: 1, inputmode: "numeric" });
  const minutes = h("input", { type: "number", name: "minutes", min: 0.1, max: 1440, step: "any" });
  const repairs = h("input", { type: "number", name: "repairs", min: 0, max: 3, step: 1 });
  const fieldset = h(
    "fieldset",
    { class: "options" },
    h("legend", {}, legend),
    field("Epochs", epochs, "Empty: the plan's choice."),
    field("Training time limit (minutes)", minutes, "Empty: the gateway's default."),
    field("Repair attempts after a failed smoke run", repairs, "0 to 3; empty: 3."),
  );
  const controls = { epochs, minutes, repairs, fieldset };
  if (defaults) fillOptions(controls, defaults);
  return controls;
}

export function fillOptions(c: OptionControls, o: JobOptions): void {
  const ep = o.hyperparameters["epochs"];
  if (ep && ep.kind.case === "numberValue") c.epochs.value = String(ep.kind.value);
  const d = o.resources?.maxTrainingDuration;
  if (d) c.minutes.value = String(Math.round((seconds(d) / 60) * 100) / 100);
  if (o.maxRepairAttempts !== undefined) c.repairs.value = String(o.maxRepairAttempts);
}

/** The JobOptions the controls describe (only what is filled in). */
export function readOptions(c: OptionControls): MessageInitShape<typeof JobOptionsSchema> {
  const hyperparameters: Record<string, Value> = {};
  if (c.epochs.value) hyperparameters["epochs"] = fromJson(ValueSchema, Number(c.epochs.value) as JsonValue);
  const options: MessageInitShape<typeof JobOptionsSchema> = {
    hyperparameters,
  };
  if (c.minutes.value) {
    const total = Math.max(1, Math.round(Number(c.minutes.value) * 60));
    options.resources = { maxTrainingDuration: { seconds: BigInt(total), nanos: 0 } };
  }
  if (c.repairs.value !== "") options.maxRepairAttempts = Number(c.repairs.value);
  return options;
}

export async function dashboardPage(ctx: PageContext): Promise<void> {
  const prompt = h("textarea", {
    name: "prompt",
    id: "prompt",
    rows: 3,
    required: true,
    maxlength: 4000,
    placeholder: "Create a sentiment analysis model",
  });
  prompt.value = sessionStorage.getItem(DRAFT_KEY) ?? "";
  prompt.addEventListener("input", () => sessionStorage.setItem(DRAFT_KEY, prompt.value));
  const urls = h("textarea", { name: "urls", id: "source-urls", rows: 2, placeholder: "https://example.org/data.csv" });
  const file = h("input", { type: "file", name: "file", id: "source-file", accept: ".csv,.tsv,.json,.jsonl,.parquet,.zip" });
  const options = optionControls("Options");
  const defaultsNote = h("div", { id: "defaults-status" });
  const status = h("div", { id: "train-status", "aria-live": "polite" });
  const train = h("button", { type: "submit", class: "primary", id: "train" }, "Train");
  const form = h(
    "form",
    { id: "train-form" },
    field("What should the model do?", prompt),
    h(
      "details",
      { class: "sources" },
      h("summary", {}, "Data sources (optional)"),
      field("URLs, one per line", urls, "Pages or files with the data. Empty: the platform looks for data."),
      field("Or upload a file", file, "CSV, TSV, JSON, JSONL, Parquet or a zip of them, up to 32 MiB."),
    ),
    h("details", { class: "sources" }, h("summary", {}, "Options"), options.fieldset, defaultsNote),
    train,
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!prompt.value.trim()) {
      replace(status, notice("error", "Write what the model should do."));
      prompt.focus();
      return;
    }
    train.disabled = true;
    replace(status, notice("info", "Creating the job…"));
    try {
      const sources: MessageInitShape<typeof DataSourceSchema>[] = urls.value
        .split(/\s+/)
        .filter(Boolean)
        .map((u) => ({ source: { case: "url", value: u } }) as MessageInitShape<typeof DataSourceSchema>);
      const chosen = file.files?.[0];
      if (chosen) {
        replace(status, notice("info", `Uploading ${chosen.name}…`));
        const content = new Uint8Array(await chosen.arrayBuffer());
        const up = await call(() => api.uploadFile({ filename: chosen.name, content }));
        sources.push({ source: { case: "uploadId", value: up.uploadId } });
      }
      const job = await call(() =>
        api.createJob({
          job: { prompt: prompt.value, sources, options: readOptions(options) },
          requestId: uuid(),
        }),
      );
      sessionStorage.removeItem(DRAFT_KEY);
      ctx.navigate(`/jobs/${job.id}`);
    } catch (err) {
      replace(status, notice("error", errorText(err)));
    } finally {
      train.disabled = false;
    }
  });

  const jobs = h("section", { id: "recent-jobs", "aria-labelledby": "recent-h" }, h("h2", { id: "recent-h" }, "Recent jobs"));
  replace(ctx.root, h("h1", {}, "Train a model"), form, jobs);
  if (!prompt.value) prompt.focus();

  void call(() => api.getUserSettings({}))
    .then((s) => {
      if (s.defaultJobOptions) fillOptions(options, s.defaultJobOptions);
    })
    .catch((err) => replace(defaultsNote, notice("error", `Default options: ${errorText(err)}`)));

  try {
    const list = await call(() => api.listJobs({ pageSize: 20 }));
    if (list.jobs.length === 0) {
      jobs.append(h("p", { class: "empty" }, "No jobs yet."));
      return;
    }
    jobs.append(
      table(
        ["Prompt", "State", "Stage", "Created"],
        list.jobs.map((j) => [
          link(`/jobs/${j.id}`, j.prompt.length > 80 ? j.prompt.slice(0, 79) + "…" : j.prompt),
          h("span", { class: `state ${stateName(j.state).toLowerCase()}` }, stateName(j.state)),
          stageName(j.stage),
          when(j.createTime),
        ]),
      ),
    );
  } catch (err) {
    jobs.append(notice("error", errorText(err)));
  }
}
