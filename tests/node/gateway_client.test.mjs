// A Node.js client of the Zehanx gateway, built only from the .proto files: proves the public
// contract is usable from another language with stock @grpc/grpc-js and @grpc/proto-loader.
//
//   ZX_GATEWAY_ADDRESS=127.0.0.1:47101 node --test tests/node/
//
// protos/build/ (the rendered buf/validate/validate.proto and the googleapis imports) is written
// by `python scripts/gen_protos.py` (or `--deps-only`). Without ZX_GATEWAY_ADDRESS the tests that
// need a server are skipped; tests/node/test_node_client.py runs them against a real server.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const protoDirs = [path.join(root, "protos"), path.join(root, "protos", "build"), here];
const address = process.env.ZX_GATEWAY_ADDRESS ?? "";
const needsServer = address ? false : "ZX_GATEWAY_ADDRESS is not set";
// A user's API key (`zx keys create`): the gateway authenticates every call.
const apiKey = process.env.ZX_API_KEY ?? "";
const loaderOptions = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: protoDirs,
};
// With a key, an unknown job must be NOT_FOUND; without one, UNAUTHENTICATED is the proper answer.
// UNKNOWN, INTERNAL or UNAVAILABLE would mean a crash or no server, so they fail the test.
const PROPER_ANSWERS = new Set(apiKey ? [grpc.status.NOT_FOUND] : [grpc.status.UNAUTHENTICATED, grpc.status.NOT_FOUND]);

function loadGateway() {
  const validate = path.join(root, "protos", "build", "buf", "validate", "validate.proto");
  assert.ok(existsSync(validate), `${validate} is missing: run python scripts/gen_protos.py --deps-only`);
  const definition = protoLoader.loadSync("zehanx/gateway/v1/gateway_service.proto", loaderOptions);
  return grpc.loadPackageDefinition(definition).zehanx.gateway.v1;
}

function loadHealth() {
  const definition = protoLoader.loadSync("health.proto", loaderOptions);
  return grpc.loadPackageDefinition(definition).grpc.health.v1;
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    if (apiKey) metadata.set("authorization", `Bearer ${apiKey}`);
    client[method](request, metadata, { deadline: deadline(10) }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

test("the gateway contract loads from .proto files alone", () => {
  const gateway = loadGateway();
  const methods = Object.keys(gateway.GatewayService.service).sort();
  assert.deepEqual(methods, [
    "CancelJob",
    "CreateApiKey",
    "CreateJob",
    "DeleteModel",
    "DeleteProviderKey",
    "DownloadModel",
    "GetDataset",
    "GetJob",
    "GetModel",
    "GetUserSettings",
    "ListApiKeys",
    "ListDatasets",
    "ListJobEvents",
    "ListJobs",
    "ListModels",
    "ListProviderKeys",
    "Predict",
    "PredictStream",
    "RevokeApiKey",
    "SetProviderKey",
    "UpdateUserSettings",
    "UploadFile",
    "WatchJob",
  ]);
  assert.equal(gateway.GatewayService.service.WatchJob.responseStream, true);
  assert.equal(gateway.GatewayService.service.GetJob.responseStream, false);
  const states = gateway.JobState.type.value.map((v) => v.name);
  assert.deepEqual(states, [
    "JOB_STATE_UNSPECIFIED",
    "JOB_STATE_QUEUED",
    "JOB_STATE_RUNNING",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
  ]);
});

test("the gateway answers health checks with SERVING", { skip: needsServer }, async () => {
  const { Health } = loadHealth();
  const client = new Health(address, grpc.credentials.createInsecure());
  try {
    const response = await unary(client, "Check", { service: "" });
    assert.equal(response.status, "SERVING");
  } finally {
    client.close();
  }
});

test("GetJob with a valid uuid gets a proper gRPC answer", { skip: needsServer }, async () => {
  const { GatewayService } = loadGateway();
  const client = new GatewayService(address, grpc.credentials.createInsecure());
  try {
    const outcome = await unary(client, "GetJob", { job_id: "3f2b8c1e-4d5a-4e6f-9a7b-8c9d0e1f2a3b" }).then(
      (job) => ({ job }),
      (error) => ({ error }),
    );
    if (outcome.job) {
      // A real gateway may know the id; then the answer must be that job.
      assert.equal(outcome.job.id, "3f2b8c1e-4d5a-4e6f-9a7b-8c9d0e1f2a3b");
      return;
    }
    const { code, details } = outcome.error;
    assert.ok(
      PROPER_ANSWERS.has(code),
      `expected ${[...PROPER_ANSWERS].map((c) => grpc.status[c]).join(" or ")}, got ${grpc.status[code]} (${code}): ${details}`,
    );
  } finally {
    client.close();
  }
});
