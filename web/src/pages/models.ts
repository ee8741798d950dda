// Models: the list; one model with its card, metrics, Download (SHA-256 checked in the page), Try it (a
// Predict form fitted to the task family) and Delete with confirmation.
import { fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { h, field, link, notice, replace, table } from "../dom.js";
import { api, call, errorText } from "../api.js";
import { bytes, familyName, num, seconds, when } from "../format.js";
import { downloadButton } from "../download.js";
import { TaskFamily } from "../gen/zehanx/common/v1/task_family_pb.js";
import type { Model } from "../gen/zehanx/gateway/v1/model_pb.js";
import type { PageContext } from "../main.js";

export async function modelsPage(ctx: PageContext): Promise<void> {
  replace(ctx.root, h("h1", {}, "Models"));
  try {
    const list = await call(() => api.listModels({ pageSize: 100 }));
    if (!list.models.length) {
      ctx.root.append(h("p", { class: "empty" }, "No models yet: train one from the ", link("/", "dashboard"), "."));
      return;
    }
    ctx.root.append(
      table(
        ["Model", "Task", "Held-out", "Baseline", "Created"],
        list.models.map((m) => [
          link(`/models/${m.id}`, m.title || m.prompt),
          familyName(m.taskFamily),
          `${m.metricName} ${num(m.heldOutMetrics?.values[m.metricName])}`,
          num(m.baselineMetrics?.values[m.metricName]),
          when(m.createTime),
        ]),
      ),
    );
  } catch (err) {
    ctx.root.append(notice("error", errorText(err)));
  }
}

export async function modelPage(ctx: PageContext): Promise<void> {
  const modelId = ctx.params[0];
  let model: Model;
  try {
    model = await call(() => api.getModel({ modelId }));
  } catch (err) {
    replace(ctx.root, h("h1", {}, "Model"), notice("error", errorText(err)), link("/models", "All models"));
    return;
  }
  // An image model's form scales pictures to the range of its training data's pixels.
  const shape = model.taskFamily === TaskFamily.IMAGE_CLASSIFICATION ? await imageShape(model) : null;
  const names = [
    ...new Set([...Object.keys(model.heldOutMetrics?.values ?? {}), ...Object.keys(model.baselineMetrics?.values ?? {})]),
  ];
  replace(
    ctx.root,
    h("h1", { class: "prompt" }, model.title || model.prompt),
    h(
      "p",
      { class: "meta" },
      `${familyName(model.taskFamily)} · prompt “`,
      h("span", {}, model.prompt),
      "” · ",
      link(`/jobs/${model.jobId}`, "its job"),
      " · ",
      link(`/datasets/${model.jobId}`, "its dataset"),
      ` · ${bytes(model.archiveSizeBytes)}`,
    ),
    h("h2", {}, "Metrics"),
    table(
      ["Metric", "Held-out", `Baseline (${model.baselineName})`, "Claimed by the program"],
      names.map((n) => [
        n === model.metricName ? h("strong", {}, n) : n,
        num(model.heldOutMetrics?.values[n]),
        num(model.baselineMetrics?.values[n]),
        num(model.claimedMetrics?.values[n]),
      ]),
    ),
    h("h2", {}, "Download"),
    downloadButton(model.id, model.archiveSha256, ctx.signal),
    h("h2", {}, "Try it"),
    predictForm(model, shape),
    h("h2", {}, "Model card"),
    h("pre", { class: "card", id: "model-card", tabindex: "0" }, model.modelCard),
    h("h2", {}, "Delete"),
    deleteBox(model, ctx),
  );
}

function predictForm(model: Model, shape: ImageShape | null): HTMLElement {
  const out = h("div", { id: "predict-result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", id: "predict" }, "Predict");
  const form = h("form", { id: "predict-form" });
  const inputs = model.plan?.inputColumns ?? [];
  let read: () => Promise<JsonValue>;
  const family = model.taskFamily;
  if (family === TaskFamily.TEXT_CLASSIFICATION) {
    const text = h("textarea", { name: "text", id: "predict-text", rows: 3, required: true });
    form.append(field("Text", text));
    read = async () => text.value;
  } else if (shape) {
    const file = h("input", { type: "file", name: "image", id: "predict-image", accept: "image/*", required: true });
    const invert = h("input", { type: "checkbox", name: "invert", id: "predict-invert", checked: shape.channels === 1 });
    form.append(
      field(
        "Image",
        file,
        `Scaled to ${shape.width}×${shape.height} pixels${shape.channels === 1 ? " in grey" : ""}, values 0 to ${shape.top} as in the training data.`,
      ),
      h(
        "div",
        { class: "check" },
        invert,
        h("label", { for: "predict-invert" }, "Dark strokes on a light ground: invert them (the training pictures are light on dark)"),
      ),
    );
    read = async () => {
      const chosen = file.files?.[0];
      if (!chosen) throw new Error("choose an image");
      return imageInstance(await createImageBitmap(chosen), shape, invert.checked, inputs);
    };
  } else if (family === TaskFamily.TIME_SERIES_CLASSIFICATION && inputs.length) {
    // one series: its values in order, into the plan's columns (t0..tN) or its one list column
    const values = h("textarea", { name: "series", id: "predict-series", rows: 3, required: true });
    const one = inputs.length === 1;
    form.append(
      field("Series", values, one ? "Its values in order, separated by commas or spaces." : `${inputs.length} values in order (${inputs[0]} … ${inputs[inputs.length - 1]}), separated by commas or spaces.`),
    );
    read = async () => {
      const numbers = values.value.split(/[\s,;]+/).filter((v) => v !== "").map(Number);
      if (numbers.some((v) => Number.isNaN(v))) throw new Error("the series holds something that is not a number");
      if (one) return { [inputs[0]]: numbers };
      if (numbers.length !== inputs.length) throw new Error(`the model reads ${inputs.length} values; got ${numbers.length}`);
      const row: JsonObject = {};
      inputs.forEach((name, i) => (row[name] = numbers[i]));
      return row;
    };
  } else if (inputs.length) {
    const controls = inputs.map((name) => {
      const input = h("input", { type: "text", name, "data-column": name });
      form.append(field(name, input));
      return input;
    });
    read = async () => {
      const row: JsonObject = {};
      controls.forEach((c, i) => {
        const v = c.value.trim();
        row[inputs[i]] = v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;
      });
      return row;
    };
  } else {
    const json = h("textarea", { name: "json", rows: 3, required: true });
    form.append(field("Input (JSON)", json, "One instance, as the model card shows it."));
    read = async () => JSON.parse(json.value) as JsonValue;
  }
  form.append(submit, out);
  let warmed = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    replace(out, notice("info", warmed ? "Predicting…" : "Predicting (the first call loads the model in its sandbox: a few seconds)…"));
    try {
      const instance = await read();
      const started = performance.now();
      const res = await call(() => api.predict({ modelId: model.id, instances: [fromJson(ValueSchema, instance)] }));
      const roundTrip = (performance.now() - started) / 1000;
      warmed = true;
      const p = res.predictions[0];
      const output = p?.output ? toJson(ValueSchema, p.output) : null;
      const probs = Object.entries(p?.probabilities ?? {}).sort((a, b) => b[1] - a[1]);
      replace(
        out,
        h("p", { class: "prediction" }, "Prediction: ", h("strong", { id: "prediction" }, typeof output === "string" ? output : JSON.stringify(output))),
        probs.length ? table(["Class", "Probability"], probs.map(([k, v]) => [k, num(v, 3)])) : null,
        latencyLine(res.warm, res.restarted, seconds(res.predictDuration), roundTrip),
      );
    } catch (err) {
      replace(out, notice("error", errorText(err)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Whether the model's loaded predictor answered (warm) or was started for this call (cold), the time
 * the trainer measured, and the whole round trip from this page. */
function latencyLine(warm: boolean, restarted: boolean, atTrainer: number, roundTrip: number): HTMLElement {
  const state = warm
    ? "Warm: the loaded model answered"
    : restarted
      ? "Cold: its predictor had stopped, so a new one loaded the model for this call"
      : "Cold: the model was loaded for this call; the next calls are answered by the loaded model";
  return h(
    "p",
    { class: "meta latency", id: "predict-latency", "data-warm": warm ? "true" : "false" },
    `${state} (${ms(atTrainer)} at the trainer, ${ms(roundTrip)} in all).`,
  );
}

function ms(s: number): string {
  return s < 1 ? `${(s * 1000).toFixed(s < 0.1 ? 1 : 0)} ms` : `${s.toFixed(2)} s`;
}

interface ImageShape {
  height: number;
  width: number;
  channels: number;
  /** The largest pixel value of the training data (16 for scikit-learn's 8x8 digits, 255 for photos). */
  top: number;
  /** One column holding the pixel array, or one column per pixel value. */
  layout: "array_column" | "pixel_columns";
}

/** The image the model reads: its size and layout from its plan's hyperparameters (the codegen's
 * planner sets them), the pixels' range from the rows of the dataset it was trained on. */
async function imageShape(model: Model): Promise<ImageShape | null> {
  const hp = model.plan?.hyperparameters ?? {};
  const n = (k: string) => {
    const v = hp[k]?.kind;
    return v?.case === "numberValue" ? v.value : undefined;
  };
  const layout = hp["image_layout"]?.kind;
  const height = n("height");
  const width = n("width");
  const channels = n("channels") ?? 1;
  if (!height || !width || layout?.case !== "stringValue" || ![1, 3, 4].includes(channels)) return null;
  if (layout.value !== "array_column" && layout.value !== "pixel_columns") return null;
  const inputs = model.plan?.inputColumns ?? [];
  if (layout.value === "array_column" ? inputs.length !== 1 : inputs.length !== height * width * channels) return null;
  return { height, width, channels, top: await pixelTop(model, inputs), layout: layout.value };
}

/** The largest pixel value in the model's dataset: the input columns' profiled maximum and the preview
 * rows' values (1 for data in 0..1). Without a dataset: what the program scales by, else 255. */
async function pixelTop(model: Model, inputs: string[]): Promise<number> {
  let top = 0;
  const walk = (v: JsonValue | undefined): void => {
    if (typeof v === "number") top = Math.max(top, v);
    else if (Array.isArray(v)) v.forEach(walk);
  };
  try {
    const d = (await call(() => api.getDataset({ jobId: model.jobId }))).dataset;
    for (const c of d?.profile?.columns ?? []) if (inputs.includes(c.name) && c.numeric) top = Math.max(top, c.numeric.max);
    for (const row of d?.previewRows ?? []) for (const name of inputs) walk(row[name]);
  } catch {
    // no dataset to read (for example deleted): fall back below
  }
  if (top > 0) return top <= 1 ? 1 : Math.ceil(top);
  const scale = model.plan?.hyperparameters["pixel_scale"]?.kind;
  return scale?.case === "numberValue" && scale.value > 0 ? Math.round(1 / scale.value) : 255;
}

/** The picture scaled to the model's size, as the instance its predict.py reads. */
function imageInstance(bitmap: ImageBitmap, s: ImageShape, invert: boolean, inputs: string[]): JsonObject {
  const canvas = document.createElement("canvas");
  canvas.width = s.width;
  canvas.height = s.height;
  const g = canvas.getContext("2d")!;
  g.fillStyle = "#fff";
  g.fillRect(0, 0, s.width, s.height);
  g.imageSmoothingQuality = "high";
  g.drawImage(bitmap, 0, 0, s.width, s.height);
  const px = g.getImageData(0, 0, s.width, s.height).data;
  const values: number[] = [];
  const level = (v: number) => {
    const x = ((invert ? 255 - v : v) / 255) * s.top;
    return s.top === 1 ? Math.round(x * 1000) / 1000 : Math.round(x);
  };
  for (let i = 0; i < s.width * s.height; i++) {
    const [r, gr, b, a] = [px[i * 4], px[i * 4 + 1], px[i * 4 + 2], px[i * 4 + 3]];
    if (s.channels === 1) values.push(level(0.299 * r + 0.587 * gr + 0.114 * b));
    else values.push(level(r), level(gr), level(b), ...(s.channels === 4 ? [level(a)] : []));
  }
  if (s.layout === "array_column") return { [inputs[0]]: values };
  const row: JsonObject = {};
  inputs.forEach((name, i) => (row[name] = values[i]));
  return row;
}

function deleteBox(model: Model, ctx: PageContext): HTMLElement {
  const box = h("div", { id: "delete-box" });
  const ask = h("button", { type: "button", class: "danger", id: "delete" }, "Delete this model");
  ask.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger", id: "confirm-delete" }, "Yes, delete it");
    const no = h("button", { type: "button", id: "keep" }, "Keep it");
    const status = h("div", { "aria-live": "polite" });
    replace(
      box,
      h("p", { role: "alert" }, "Delete ", h("strong", {}, model.title || model.prompt), " and its stored files? The job stays. This cannot be undone."),
      yes,
      " ",
      no,
      status,
    );
    no.addEventListener("click", () => replace(box, ask));
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await call(() => api.deleteModel({ modelId: model.id }));
        ctx.navigate("/models");
      } catch (err) {
        replace(status, notice("error", errorText(err)));
        yes.disabled = false;
      }
    });
    yes.focus();
  });
  replace(box, ask);
  return box;
}
