// Model download: the DownloadModel stream into memory, its SHA-256 checked here with crypto.subtle
// against the header's before the file is handed to the browser.
import { api, call, errorText } from "./api.js";
import { h, notice, replace } from "./dom.js";
import { bytes } from "./format.js";

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A Download button and its status line for `modelId`. */
export function downloadButton(modelId: string, expectedSha256: string, signal: AbortSignal): HTMLElement {
  const status = h("div", { class: "download-status", "aria-live": "polite" });
  const button = h("button", { type: "button", class: "download" }, "Download");
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(status, notice("info", "Downloading…"));
    try {
      const { blob, filename, sha256 } = await call(async () => {
        const chunks: Uint8Array[] = [];
        let name = "model.zip";
        let media = "application/zip";
        let sha = "";
        let total = 0;
        for await (const part of api.downloadModel({ modelId }, { signal })) {
          if (part.part.case === "header") {
            name = part.part.value.filename || name;
            media = part.part.value.mediaType || media;
            sha = part.part.value.sha256;
            total = Number(part.part.value.totalSizeBytes);
          } else if (part.part.case === "chunk") {
            chunks.push(part.part.value.data);
            const got = chunks.reduce((n, c) => n + c.length, 0);
            replace(status, notice("info", `Downloading… ${bytes(got)} of ${bytes(total)}`));
          }
        }
        return { blob: new Blob(chunks, { type: media }), filename: name, sha256: sha };
      });
      if (!crypto.subtle) {
        throw new Error("this page is not in a secure context (https or localhost): the SHA-256 cannot be checked here");
      }
      const actual = hex(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
      const expected = sha256 || expectedSha256;
      if (actual !== expected) {
        throw new Error(`the archive's SHA-256 ${actual} does not match ${expected}: not saved`);
      }
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      replace(
        status,
        notice("ok", "Saved ", h("code", {}, filename), ` (${bytes(blob.size)}); SHA-256 verified: `, h("code", { class: "sha", "data-verified": actual }, actual)),
      );
    } catch (err) {
      replace(status, notice("error", errorText(err)));
    } finally {
      button.disabled = false;
    }
  });
  return h("div", { class: "download-box" }, button, h("p", { class: "hint" }, "SHA-256 ", h("code", { class: "sha" }, expectedSha256)), status);
}
