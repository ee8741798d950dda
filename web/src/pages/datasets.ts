// Datasets: what each job built: sources and provenance, row counts, split sizes, column types, class
// balance and a preview of rows. Column names and cells are data: rendered as text only.
import type { JsonValue } from "@bufbuild/protobuf";
import { h, link, notice, replace, table } from "../dom.js";
import { api, call, errorText } from "../api.js";
import { bytes, columnTypeName, familyName, num, when } from "../format.js";
import type { PageContext } from "../main.js";

export async function datasetsPage(ctx: PageContext): Promise<void> {
  replace(ctx.root, h("h1", {}, "Datasets"));
  try {
    const list = await call(() => api.listDatasets({ pageSize: 100 }));
    if (!list.datasets.length) {
      ctx.root.append(h("p", { class: "empty" }, "No datasets yet: each job builds one."));
      return;
    }
    ctx.root.append(
      table(
        ["Dataset", "Job prompt", "Task", "Rows (train / validation / test)", "Built"],
        list.datasets.map((r) => [
          link(`/datasets/${r.jobId}`, r.dataset?.name || r.jobId),
          r.jobPrompt,
          familyName(r.dataset?.taskFamily ?? 0),
          r.dataset ? `${r.dataset.trainRowCount} / ${r.dataset.validationRowCount} / ${r.dataset.testRowCount}` : "",
          when(r.createTime),
        ]),
      ),
    );
  } catch (err) {
    ctx.root.append(notice("error", errorText(err)));
  }
}

function cell(v: JsonValue | undefined): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

export async function datasetPage(ctx: PageContext): Promise<void> {
  const jobId = ctx.params[0];
  replace(ctx.root, h("h1", {}, "Dataset"));
  try {
    const rec = await call(() => api.getDataset({ jobId }));
    const d = rec.dataset;
    if (!d) throw new Error("the job recorded no dataset");
    const p = d.profile;
    const total = Number(p?.rowCount ?? 0n);
    const preview = d.previewRows;
    // The rows are JSON objects (their keys come back sorted): show them in the dataset's column order.
    const order = (p?.columns ?? []).map((c) => c.name);
    const rank = (name: string) => (order.indexOf(name) + order.length + 1) % (order.length + 1);
    const columns = [...new Set(preview.flatMap((r) => Object.keys(r)))].sort((a, b) => rank(a) - rank(b));
    replace(
      ctx.root,
      h("h1", {}, d.name),
      h(
        "p",
        { class: "meta" },
        `${familyName(d.taskFamily)} · target `,
        h("code", {}, d.targetColumn),
        " · built for ",
        link(`/jobs/${rec.jobId}`, rec.jobPrompt),
        ` · ${when(rec.createTime)}`,
      ),
      d.explanation ? h("p", {}, d.explanation) : null,
      ...d.warnings.map((w) => notice("info", w)),
      h("h2", {}, "Rows"),
      table(
        ["Total", "Train", "Validation", "Test", "Duplicates dropped", "Rows dropped"],
        [[String(total), String(d.trainRowCount), String(d.validationRowCount), String(d.testRowCount), String(p?.duplicateRowCount ?? 0n), String(p?.droppedRowCount ?? 0n)]],
      ),
      h("h2", {}, "Sources and provenance"),
      table(
        ["Source", "Title", "Fetched", "Size", "SHA-256", "Licence"],
        d.provenance.map((s) => [s.source, s.title, when(s.fetchTime), s.sizeBytes ? bytes(s.sizeBytes) : "", h("code", { class: "sha" }, s.sha256), s.license]),
      ),
      h("h2", {}, "Columns"),
      table(
        ["Column", "Type", "Missing", "Distinct", "Range / length", "Samples"],
        (p?.columns ?? []).map((c) => [
          h("code", { class: "column-name" }, c.name),
          columnTypeName(c.type),
          String(c.missingCount),
          String(c.distinctCount),
          c.numeric
            ? `${num(c.numeric.min)} … ${num(c.numeric.max)} (mean ${num(c.numeric.mean, 3)})`
            : c.textLength
              ? `${c.textLength.min}–${c.textLength.max} chars (median ${num(c.textLength.p50, 0)})`
              : "",
          c.sampleValues.join(" · "),
        ]),
        "Column types",
      ),
      h("h2", {}, "Class balance"),
      p?.classes.length
        ? h(
            "ul",
            { class: "balance", id: "class-balance" },
            ...p.classes.map((c) =>
              h(
                "li",
                {},
                h("span", { class: "label" }, c.label),
                h("meter", { min: 0, max: 1, value: c.fraction, "aria-label": `share of ${c.label}` }),
                ` ${c.count} (${(c.fraction * 100).toFixed(1)} %)`,
              ),
            ),
          )
        : h("p", {}, "Not a classification dataset."),
      p && p.imbalanceRatio ? h("p", { class: "hint" }, `Imbalance ratio ${num(p.imbalanceRatio, 2)}.`) : null,
      h("h2", {}, "Preview"),
      preview.length
        ? h(
            "div",
            { class: "scroll", tabindex: "0", role: "region", "aria-label": "Preview rows" },
            table(columns, preview.map((r) => columns.map((c) => cell(r[c]))), `First ${preview.length} training rows`),
          )
        : h("p", {}, "No preview rows."),
    );
  } catch (err) {
    ctx.root.append(notice("error", errorText(err)));
  }
}
