// Settings: API keys (the secret shown once, listed, revoked), the user's own provider keys (set; only a
// hint is ever shown back; delete), and the default options new jobs start with.
import { h, field, notice, replace, table } from "../dom.js";
import { api, call, errorText } from "../api.js";
import { providerName, when } from "../format.js";
import { Provider } from "../gen/zehanx/gateway/v1/account_pb.js";
import { fillOptions, optionControls, readOptions } from "./dashboard.js";
import type { PageContext } from "../main.js";

export async function settingsPage(ctx: PageContext): Promise<void> {
  const apiKeys = h("section", { id: "api-keys", "aria-labelledby": "api-keys-h" });
  const providers = h("section", { id: "provider-keys", "aria-labelledby": "provider-keys-h" });
  const defaults = h("section", { id: "defaults", "aria-labelledby": "defaults-h" });
  replace(ctx.root, h("h1", {}, "Settings"), apiKeys, providers, defaults);
  await Promise.all([renderApiKeys(apiKeys), renderProviders(providers), renderDefaults(defaults)]);
}

async function renderApiKeys(box: HTMLElement): Promise<void> {
  const label = h("input", { type: "text", name: "label", maxlength: 200, placeholder: "laptop" });
  const created = h("div", { id: "api-key-created", "aria-live": "polite" });
  const list = h("div", { id: "api-key-list" });
  const form = h("form", { id: "api-key-form", class: "inline" }, field("Label", label), h("button", { type: "submit" }, "Create API key"));
  const reload = async () => {
    try {
      const res = await call(() => api.listApiKeys({}));
      replace(
        list,
        res.apiKeys.length
          ? table(
              ["Key", "Label", "Created", "State", ""],
              res.apiKeys.map((k) => {
                const revoke = h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.keyId}` }, "Revoke");
                revoke.addEventListener("click", async () => {
                  revoke.disabled = true;
                  try {
                    await call(() => api.revokeApiKey({ keyId: k.keyId }));
                    await reload();
                  } catch (err) {
                    replace(created, notice("error", errorText(err)));
                    revoke.disabled = false;
                  }
                });
                return [h("code", {}, `zx_${k.keyId}_…`), k.label, when(k.createTime), k.revokeTime ? `revoked ${when(k.revokeTime)}` : "active", k.revokeTime ? "" : revoke];
              }),
            )
          : h("p", { class: "empty" }, "No API keys."),
      );
    } catch (err) {
      replace(list, notice("error", errorText(err)));
    }
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const res = await call(() => api.createApiKey({ label: label.value }));
      label.value = "";
      replace(
        created,
        notice(
          "ok",
          h("p", {}, "Your new key. Copy it now: it is not shown again."),
          h("code", { id: "api-key-secret", class: "secret", tabindex: "0" }, res.secret),
        ),
      );
      await reload();
    } catch (err) {
      replace(created, notice("error", errorText(err)));
    }
  });
  replace(
    box,
    h("h2", { id: "api-keys-h" }, "API keys"),
    h("p", { class: "hint" }, "For the CLI and programs: send as x-api-key. Stored hashed."),
    form,
    created,
    list,
  );
  await reload();
}

async function renderProviders(box: HTMLElement): Promise<void> {
  const status = h("div", { id: "provider-status", "aria-live": "polite" });
  const list = h("div", { id: "provider-list" });
  const provider = h(
    "select",
    { name: "provider" },
    ...[Provider.GROQ, Provider.FIRECRAWL, Provider.E2B].map((p) => h("option", { value: p }, providerName(p))),
  );
  const secret = h("input", { type: "password", name: "secret", autocomplete: "off", minlength: 8, maxlength: 512, required: true });
  const form = h("form", { id: "provider-form", class: "inline" }, field("Provider", provider), field("Key", secret), h("button", { type: "submit" }, "Save key"));
  const reload = async () => {
    try {
      const res = await call(() => api.listProviderKeys({}));
      replace(
        list,
        res.providerKeys.length
          ? table(
              ["Provider", "Key", "Updated", ""],
              res.providerKeys.map((k) => {
                const del = h("button", { type: "button", class: "danger", "aria-label": `Delete the ${providerName(k.provider)} key` }, "Delete");
                del.addEventListener("click", async () => {
                  try {
                    await call(() => api.deleteProviderKey({ provider: k.provider }));
                    await reload();
                  } catch (err) {
                    replace(status, notice("error", errorText(err)));
                  }
                });
                return [providerName(k.provider), h("code", {}, k.hint), when(k.updateTime), del];
              }),
            )
          : h("p", { class: "empty" }, "None stored: jobs use the operator's keys (or the offline defaults)."),
      );
    } catch (err) {
      replace(list, notice("error", errorText(err)));
    }
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const saved = await call(() => api.setProviderKey({ provider: Number(provider.value) as Provider, secret: secret.value }));
      secret.value = "";
      replace(status, notice("ok", `${providerName(saved.provider)} key saved (${saved.hint}).`));
      await reload();
    } catch (err) {
      replace(status, notice("error", errorText(err)));
    }
  });
  replace(
    box,
    h("h2", { id: "provider-keys-h" }, "Your provider keys"),
    h("p", { class: "hint" }, "Used for your jobs instead of the operator's. Stored encrypted; never shown back in full, never logged, never passed into the sandbox."),
    form,
    status,
    list,
  );
  await reload();
}

async function renderDefaults(box: HTMLElement): Promise<void> {
  const controls = optionControls("Defaults for new jobs");
  const status = h("div", { id: "defaults-status", "aria-live": "polite" });
  const form = h("form", { id: "defaults-form" }, controls.fieldset, h("button", { type: "submit" }, "Save defaults"), status);
  replace(box, h("h2", { id: "defaults-h" }, "Default job options"), form);
  try {
    const s = await call(() => api.getUserSettings({}));
    if (s.defaultJobOptions) fillOptions(controls, s.defaultJobOptions);
  } catch (err) {
    replace(status, notice("error", errorText(err)));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await call(() => api.updateUserSettings({ settings: { defaultJobOptions: readOptions(controls) } }));
      replace(status, notice("ok", "Saved."));
    } catch (err) {
      replace(status, notice("error", errorText(err)));
    }
  });
}
