// Benchmark page script (bench/bench_web.py): watch one job through the gateway's Connect edge with the
// same client the dashboard uses (connect-web + the generated GatewayService), counting every message the
// page receives, and publish the result on window.__zxBench for the benchmark to read.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { GatewayService } from "../../web/src/gen/zehanx/gateway/v1/gateway_service_pb";

type Result = { events: number; ms: number; error?: string };

declare global {
  interface Window {
    __zxBenchWatch: (jobId: string, token: string) => Promise<Result>;
  }
}

const client = createClient(GatewayService, createConnectTransport({ baseUrl: location.origin }));

window.__zxBenchWatch = async (jobId: string, token: string): Promise<Result> => {
  const started = performance.now();
  let events = 0;
  try {
    for await (const message of client.watchJob(
      { jobId },
      { headers: { authorization: `Bearer ${token}` } },
    )) {
      if (message.event) events += 1;
    }
  } catch (err) {
    return { events, ms: performance.now() - started, error: String(err) };
  }
  return { events, ms: performance.now() - started };
};
