// Job page: state and stage timeline, a live chart of training and validation loss and metrics, the log
// tail, ETA and Cancel; when it succeeded, held-out metrics beside the baseline, the model card and
// Download. Events come from WatchJob. Each is applied once (by sequence); after a reload or a dropped
// stream the page watches again from the last sequence it applied, keeping what it had (sessionStorage),
// so the chart has no gap and no duplicate.
import { Code, ConnectError } from "@connectrpc/connect";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";
import { h, link, notice, replace, table } from "../dom.js";
import { api, call, errorText, isNetworkError, setReachable, signalSessionLost } from "../api.js";
import { refresh } from "../auth.js";
import { drawChart, type Series } from "../chart.js";
import { duration, num, seconds, stageName, stateName, TERMINAL, when } from "../format.js";
import { downloadButton } from "../download.js";
import { JobEventSchema, type JobEvent } from "../gen/zehanx/gateway/v1/job_event_pb.js";
import { LogSource } from "../gen/zehanx/common/v1/log_pb.js";
import { JobStage, JobState, type Job } from "../gen/zehanx/gateway/v1/job_pb.js";
import type { PageContext } from "../main.js";

const STAGES = [JobStage.CRAWLING, JobStage.GENERATING, JobStage.TRAINING, JobStage.EVALUATING, JobStage.PUBLISHING];
const LOG_KEEP = 300;
const cacheKey = (id: string) => `zx.job.${id}`;

interface Cache {
  lastSequence: number;
  /** The applied events, binary protobuf in base64 (JSON would need every Any's type registered). */
  events: string[];
}

export function forgetJobCaches(): void {
  for (const key of Object.keys(sessionStorage)) if (key.startsWith("zx.job.")) sessionStorage.removeItem(key);
}

export async function jobPage(ctx: PageContext): Promise<void> {
  const jobId = ctx.params[0];
  const { root, signal } = ctx;
  let job: Job;
  try {
    job = await call(() => api.getJob({ jobId }));
  } catch (err) {
    replace(root, h("h1", {}, "Job"), notice("error", errorText(err)), link("/", "Back to the dashboard"));
    return;
  }

  // -- the page's parts ---------------------------------------------------------------------------------
  const title = h("h1", { class: "prompt" });
  const stateBadge = h("span", { id: "job-state", class: "state" });
  const meta = h("p", { class: "meta" });
  const timeline = h("ol", { class: "timeline", "aria-label": "Stages" });
  const cancel = h("button", { type: "button", id: "cancel", class: "danger" }, "Cancel job");
  const cancelStatus = h("div", { "aria-live": "polite" });
  const progress = h("p", { id: "progress", class: "progress", "aria-live": "polite" });
  const eta = h("span", { id: "eta" });
  const lossSvg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  lossSvg.id = "loss-chart";
  lossSvg.setAttribute("role", "img");
  lossSvg.setAttribute("aria-label", "Training and validation loss by step");
  const metricSvg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  metricSvg.id = "metric-chart";
  metricSvg.setAttribute("role", "img");
  metricSvg.setAttribute("aria-label", "Validation metrics by step");
  const legend = h("ul", { class: "legend" });
  const chartFigure = h(
    "figure",
    { id: "chart", class: "chart", "data-points": "0", "data-sequences": "", "data-watch": "starting" },
    lossSvg,
    metricSvg,
    h("figcaption", {}, legend),
  );
  const noSteps = h("p", { id: "no-steps", class: "empty", hidden: true }, "No training steps were run.");
  const logList = h("ol", { id: "log", class: "log", "aria-label": "Log tail" });
  const datasetBox = h("section", { id: "dataset-summary" });
  const resultBox = h("section", { id: "result" });
  const errorBox = h("div", { id: "job-error" });

  replace(
    root,
    title,
    h("p", {}, stateBadge, " ", h("span", { id: "job-stage" }), " ", eta),
    meta,
    errorBox,
    timeline,
    h("div", { class: "actions" }, cancel, cancelStatus),
    h("h2", {}, "Training"),
    progress,
    chartFigure,
    noSteps,
    datasetBox,
    resultBox,
    h("h2", {}, "Log"),
    logList,
  );

  // -- state ------------------------------------------------------------------------------------------
  let lastSequence = 0;
  const stored: string[] = [];
  const trainLoss: [number, number][] = [];
  const validation = new Map<string, [number, number][]>();
  const sequences: number[] = [];
  // Training runs lost with their node (the gateway trained again from the start): drawn apart, dashed,
  // so the new run's steps are never spliced into the lost run's curve.
  const lostRuns: Series[] = [];
  let run = 1;
  let lastEta = 0;
  let lastEtaAt = 0;
  const reachedStages = new Set<JobStage>();
  let modelShown = false;

  const cached = sessionStorage.getItem(cacheKey(jobId));
  const saveCache = () => {
    try {
      sessionStorage.setItem(cacheKey(jobId), JSON.stringify({ lastSequence, events: stored } satisfies Cache));
    } catch {
      sessionStorage.removeItem(cacheKey(jobId)); // full: the next load replays from the start
    }
  };

  function renderJob(): void {
    title.textContent = job.prompt;
    document.title = `${job.prompt.slice(0, 40)} · Zehanx`;
    const state = stateName(job.state);
    stateBadge.textContent = state;
    stateBadge.className = `state ${state.toLowerCase()}`;
    const terminal = TERMINAL.has(job.state);
    // The stage only while the job runs: an ended job reads SUCCEEDED, not "SUCCEEDED · PUBLISHING".
    root.querySelector("#job-stage")!.textContent = job.stage && !terminal ? `· ${stageName(job.stage)}` : "";
    replace(
      meta,
      "Job ",
      h("code", {}, job.id),
      ` · created ${when(job.createTime)}`,
      job.endTime ? ` · ended ${when(job.endTime)}` : "",
      job.repairCount ? ` · ${job.repairCount} repair(s)` : "",
      job.traceId ? " · trace " : "",
      job.traceId ? h("code", { title: "OpenTelemetry trace id: look it up in your tracing backend" }, job.traceId) : "",
    );
    cancel.hidden = terminal || job.state === JobState.CANCELLING;
    if (job.error && job.error.message && (job.state === JobState.FAILED || job.state === JobState.CANCELLED)) {
      replace(errorBox, notice(job.state === JobState.FAILED ? "error" : "info", job.error.message));
    }
    if (job.stage) reachedStages.add(job.stage);
    replace(
      timeline,
      ...STAGES.map((s) => {
        const current = s === job.stage && !terminal;
        const done =
          (reachedStages.has(s) && s !== job.stage) ||
          (job.state === JobState.SUCCEEDED) ||
          (terminal && s < job.stage);
        const failed = terminal && s === job.stage && job.state !== JobState.SUCCEEDED;
        const cls = failed ? "failed" : current ? "current" : done ? "done" : "pending";
        return h("li", { class: cls, "aria-current": current ? "step" : null }, stageName(s).toLowerCase());
      }),
    );
    if (terminal) {
      eta.textContent = "";
      progress.textContent = "";
    }
    progress.hidden = terminal; // its reserved line is for a running job's progress
    if (job.state === JobState.SUCCEEDED && job.modelId && !modelShown) {
      modelShown = true;
      void showModel(job.modelId);
    }
  }

  function renderChart(): void {
    const val = [...validation.entries()];
    const current = run > 1 ? `training loss (run ${run})` : "training loss";
    const lossSeries: Series[] = [...lostRuns, { name: current, cls: "s0", points: trainLoss }];
    const metricSeries: Series[] = [];
    for (const [name, pts] of val) {
      if (name === "loss") lossSeries.push({ name: "validation loss", cls: "s1", points: pts });
      else metricSeries.push({ name: `validation ${name}`, cls: `s${2 + metricSeries.length}`, points: pts });
    }
    drawChart(lossSvg, lossSeries, "step");
    metricSvg.style.display = metricSeries.length ? "" : "none";
    if (metricSeries.length) drawChart(metricSvg, metricSeries, "step");
    replace(
      legend,
      ...[...lossSeries, ...metricSeries]
        .filter((s) => s.points.length)
        .map((s) => h("li", {}, h("span", { class: `swatch ${s.cls}`, "aria-hidden": "true" }), s.name)),
    );
    chartFigure.dataset.points = String(sequences.length);
    chartFigure.dataset.sequences = sequences.join(",");
    chartFigure.dataset.runs = String(run);
  }

  /** The gateway's line "node lost: ..." (a platform line; a program cannot write one): a new run. */
  function startNewRun(): void {
    if (trainLoss.length) {
      lostRuns.push({ name: `training loss, run ${run} (node lost)`, cls: "lost", points: [...trainLoss] });
    }
    trainLoss.length = 0;
    validation.clear();
    run += 1;
    renderChart();
  }

  function addLog(text: string, stream: string, seq: number): void {
    logList.append(h("li", { class: stream, "data-sequence": seq }, text));
    while (logList.childElementCount > LOG_KEEP) logList.firstElementChild?.remove();
    if (logList.scrollHeight - logList.scrollTop - logList.clientHeight < 80) logList.scrollTop = logList.scrollHeight;
  }

  async function showModel(modelId: string): Promise<void> {
    try {
      const model = await call(() => api.getModel({ modelId }));
      const names = [...new Set([...Object.keys(model.heldOutMetrics?.values ?? {}), ...Object.keys(model.baselineMetrics?.values ?? {})])];
      replace(
        resultBox,
        h("h2", {}, "Result"),
        table(
          ["Metric", "This model (held-out)", `Baseline (${model.baselineName})`],
          names.map((n) => [
            n === model.metricName ? h("strong", {}, n) : n,
            num(model.heldOutMetrics?.values[n]),
            num(model.baselineMetrics?.values[n]),
          ]),
          "Held-out test split (never seen by the program)",
        ),
        h("p", {}, link(`/models/${model.id}`, "Open the model"), " to try it."),
        downloadButton(model.id, model.archiveSha256, signal),
        h("h3", {}, "Model card"),
        h("pre", { class: "card", id: "model-card", tabindex: "0" }, model.modelCard),
      );
    } catch (err) {
      replace(resultBox, notice("error", `The model: ${errorText(err)}`));
    }
  }

  function apply(ev: JobEvent, fromCache = false): void {
    const e = ev.event;
    if (e.case === "snapshot") {
      job = e.value;
      renderJob();
      return;
    }
    const seq = Number(ev.sequence);
    if (seq <= lastSequence) return; // already applied: no duplicate
    lastSequence = seq;
    if (e.case !== "stageProgress") {
      if (e.case === "logLine" && stored.length > 3000) {
        // keep the cache small: log lines beyond the tail are not needed again
      } else {
        stored.push(base64Encode(toBinary(JobEventSchema, ev)));
      }
    }
    if (ev.stage) reachedStages.add(ev.stage);
    switch (e.case) {
      case "stateChange": {
        const c = e.value;
        job.state = c.toState;
        if (c.toStage) job.stage = c.toStage;
        if (c.error) job.error = c.error;
        if (TERMINAL.has(c.toState) && ev.eventTime) job.endTime = ev.eventTime;
        if (c.reason) addLog(c.reason, "platform", seq);
        renderJob();
        break;
      }
      case "stageProgress":
        progress.textContent = e.value.message;
        break;
      case "trainingMetrics": {
        const m = e.value;
        if (m.smoke) {
          progress.textContent = `Smoke run: step ${m.step}`;
          break;
        }
        const step = Number(m.step);
        sequences.push(seq);
        if (m.loss !== undefined) trainLoss.push([step, m.loss]);
        for (const [name, value] of Object.entries(m.validationMetrics?.values ?? {})) {
          if (!validation.has(name)) validation.set(name, []);
          validation.get(name)!.push([step, value]);
        }
        if (m.etaDuration && !fromCache) {
          lastEta = seconds(m.etaDuration);
          lastEtaAt = Date.now();
        }
        progress.textContent =
          `Epoch ${m.epoch} · step ${m.step}` + (m.totalSteps ? ` of ${m.totalSteps}` : "") +
          (m.loss !== undefined ? ` · loss ${num(m.loss)}` : "");
        renderChart();
        break;
      }
      case "logLine":
        addLog(e.value.text, e.value.stream === 2 ? "stderr" : "stdout", seq);
        if (e.value.source === LogSource.PLATFORM && e.value.text.startsWith("node lost:")) startNewRun();
        break;
      case "datasetBuilt": {
        const d = e.value;
        replace(
          datasetBox,
          h("h2", {}, "Dataset"),
          h(
            "p",
            {},
            h("strong", {}, d.name),
            ` · target ${d.targetColumn} · ${d.trainRowCount} / ${d.validationRowCount} / ${d.testRowCount} rows (train / validation / test) · `,
            link(`/datasets/${jobId}`, "details"),
          ),
        );
        break;
      }
      case "programGenerated":
        addLog(
          `program ${e.value.programAttempt} written by ${e.value.backend}` +
            (e.value.changeSummary ? `: ${e.value.changeSummary}` : ""),
          "platform",
          seq,
        );
        break;
      case "evaluationResult":
        addLog(`held-out evaluation on ${e.value.testRowCount} rows done`, "platform", seq);
        break;
      case "modelPublished":
        job.modelId = e.value.modelId;
        break;
    }
  }

  const etaTimer = setInterval(() => {
    if (!lastEtaAt || TERMINAL.has(job.state)) return;
    const left = lastEta - (Date.now() - lastEtaAt) / 1000;
    eta.textContent = left > 0 ? `· about ${duration(left)} left` : "";
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(etaTimer));

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const answered = await call(() => api.cancelJob({ jobId, reason: "cancelled from the dashboard" }));
      // The stream may already have brought what came after (CANCELLED right behind CANCELLING): an
      // older answer must not put the page back to CANCELLING with nothing more to come.
      if (Number(answered.lastSequence) >= lastSequence) {
        job = answered;
        renderJob();
      }
      replace(cancelStatus);
    } catch (err) {
      replace(cancelStatus, notice("error", errorText(err)));
    } finally {
      cancel.disabled = false;
    }
  });

  // -- restore, then watch --------------------------------------------------------------------------------
  if (cached) {
    try {
      const c = JSON.parse(cached) as Cache;
      for (const raw of c.events) apply(fromBinary(JobEventSchema, base64Decode(raw)), true);
    } catch {
      sessionStorage.removeItem(cacheKey(jobId));
    }
  }
  renderJob();
  renderChart();

  let pending = false;
  const scheduleSave = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => {
      pending = false;
      saveCache();
    }, 300);
  };
  window.addEventListener("pagehide", saveCache, { signal });
  // Redrawn at its new width when the window is resized (the chart's labels keep their size).
  let drawnWidth = chartFigure.getBoundingClientRect().width;
  const resized = new ResizeObserver(() => {
    const w = chartFigure.getBoundingClientRect().width;
    if (Math.abs(w - drawnWidth) < 1) return;
    drawnWidth = w;
    renderChart();
  });
  resized.observe(chartFigure);
  signal.addEventListener("abort", () => resized.disconnect());

  let backoff = 500;
  let refreshed = false;
  while (!signal.aborted) {
    chartFigure.dataset.watch = "live";
    try {
      for await (const res of api.watchJob({ jobId, afterSequence: BigInt(lastSequence) }, { signal })) {
        setReachable(true);
        backoff = 500;
        refreshed = false;
        if (res.event) {
          apply(res.event);
          scheduleSave();
        }
      }
      if (TERMINAL.has(job.state)) break;
    } catch (err) {
      if (signal.aborted) break;
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        if (!refreshed && (await refresh().catch(() => false))) {
          refreshed = true;
          continue;
        }
        signalSessionLost();
        return;
      }
      if (!isNetworkError(err) && !(err instanceof ConnectError && err.code === Code.Unavailable)) {
        replace(errorBox, notice("error", errorText(err)));
        break;
      }
      setReachable(false);
      chartFigure.dataset.watch = "reconnecting";
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  }
  saveCache();
  chartFigure.dataset.watch = "ended";
  // Every event is in: a job that ended before its first training step gets a line, not an empty box.
  if (TERMINAL.has(job.state) && sequences.length === 0) {
    chartFigure.hidden = true;
    noSteps.hidden = false;
  }
}
