// Models: the list; one model with its card, metrics, Download (SHA-256 checked in the page), Try it (a
// Predict form fitted to the task family) and Delete with confirmation.
import { fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { h, field, link, notice, replace, table } from "../dom.js";
import { api, call, errorText } from "../api.js";
import { bytes, familyName, num, when } from "../format.js";
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
    predictForm(model),
    h("h2", {}, "Model card"),
    h("pre", { class: "card", id: "model-card", tabindex: "0" }, model.modelCard),
    h("h2", {}, "Delete"),
    deleteBox(model, ctx),
  );
}

function predictForm(model: Model): HTMLElement {
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
  } else if (family === TaskFamily.IMAGE_CLASSIFICATION && inputs.length > 1 && Number.isInteger(Math.sqrt(inputs.length))) {
    const side = Math.sqrt(inputs.length);
    const file = h("input", { type: "file", name: "image", accept: "image/*", required: true });
    form.append(field("Image", file, `Scaled to ${side}×${side} grey pixels, dark ink on light paper.`));
    read = async () => {
      const chosen = file.files?.[0];
      if (!chosen) throw new Error("choose an image");
      const bitmap = await createImageBitmap(chosen);
      const canvas = document.createElement("canvas");
      canvas.width = side;
      canvas.height = side;
      const g = canvas.getContext("2d")!;
      g.fillStyle = "#fff";
      g.fillRect(0, 0, side, side);
      g.drawImage(bitmap, 0, 0, side, side);
      const px = g.getImageData(0, 0, side, side).data;
      const row: JsonObject = {};
      // Ink (1 - brightness) scaled to 0..16, the range of the digits data the image template reads.
      inputs.forEach((name, i) => {
        const lum = (0.299 * px[i * 4] + 0.587 * px[i * 4 + 1] + 0.114 * px[i * 4 + 2]) / 255;
        row[name] = Math.round((1 - lum) * 16);
      });
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
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    replace(out, notice("info", "Predicting (the model runs in the sandbox)…"));
    try {
      const instance = await read();
      const res = await call(() => api.predict({ modelId: model.id, instances: [fromJson(ValueSchema, instance)] }));
      const p = res.predictions[0];
      const output = p?.output ? toJson(ValueSchema, p.output) : null;
      const probs = Object.entries(p?.probabilities ?? {}).sort((a, b) => b[1] - a[1]);
      replace(
        out,
        h("p", { class: "prediction" }, "Prediction: ", h("strong", { id: "prediction" }, typeof output === "string" ? output : JSON.stringify(output))),
        probs.length ? table(["Class", "Probability"], probs.map(([k, v]) => [k, num(v, 3)])) : null,
      );
    } catch (err) {
      replace(out, notice("error", errorText(err)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
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
