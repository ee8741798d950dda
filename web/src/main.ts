// The dashboard's entry: loads where auth is, restores the session, and routes between pages with the
// History API (the edge answers index.html for every app path, so reloads and shared links work).
import { h, replace, link } from "./dom.js";
import { authMode, email, loadConfig, refresh, signOut } from "./auth.js";
import { isNetworkError, setReachable, whenSessionLost } from "./api.js";
import { signInPage } from "./pages/signin.js";
import { dashboardPage } from "./pages/dashboard.js";
import { forgetJobCaches, jobPage } from "./pages/job.js";
import { modelsPage, modelPage } from "./pages/models.js";
import { datasetsPage, datasetPage } from "./pages/datasets.js";
import { settingsPage } from "./pages/settings.js";

export interface PageContext {
  root: HTMLElement;
  params: string[];
  signal: AbortSignal;
  navigate: (path: string) => void;
}
type Page = (ctx: PageContext) => void | Promise<void>;

const routes: [RegExp, Page, string][] = [
  [/^\/$/, dashboardPage, "Dashboard"],
  [/^\/jobs\/([0-9a-f-]{36})$/, jobPage, "Job"],
  [/^\/models$/, modelsPage, "Models"],
  [/^\/models\/([0-9a-f-]{36})$/, modelPage, "Model"],
  [/^\/datasets$/, datasetsPage, "Datasets"],
  [/^\/datasets\/([0-9a-f-]{36})$/, datasetPage, "Dataset"],
  [/^\/settings$/, settingsPage, "Settings"],
];

let signedIn = false;
let current: AbortController | null = null;

function navigate(path: string, replaceState = false): void {
  if (replaceState) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  void render();
}

function goSignIn(): void {
  signedIn = false;
  const next = location.pathname.startsWith("/signin") ? "/" : location.pathname + location.search;
  navigate(`/signin?next=${encodeURIComponent(next)}`, true);
}

function nav(active: string): HTMLElement {
  const item = (href: string, label: string) => {
    const a = link(href, label);
    if (label === active) a.setAttribute("aria-current", "page");
    return h("li", {}, a);
  };
  return h(
    "header",
    { class: "top" },
    h("a", { href: "#main", class: "skip" }, "Skip to content"),
    h("span", { class: "brand" }, "Zehanx"),
    h(
      "nav",
      { "aria-label": "Main" },
      h(
        "ul",
        {},
        item("/", "Dashboard"),
        item("/models", "Models"),
        item("/datasets", "Datasets"),
        item("/settings", "Settings"),
      ),
    ),
    h(
      "div",
      { class: "who" },
      h("span", { id: "who" }, email()),
      h(
        "button",
        {
          type: "button",
          id: "sign-out",
          onclick: async () => {
            await signOut();
            forgetJobCaches();
            sessionStorage.removeItem("zx.draft");
            signedIn = false;
            navigate("/signin", true);
          },
        },
        "Sign out",
      ),
    ),
  );
}

async function render(): Promise<void> {
  current?.abort();
  current = new AbortController();
  const app = document.getElementById("app")!;
  const path = location.pathname;
  const ctx = (root: HTMLElement, params: string[]): PageContext => ({
    root,
    params,
    signal: current!.signal,
    navigate: (p) => navigate(p),
  });
  if (path === "/signin" || path === "/signup" || !signedIn) {
    if (signedIn && (path === "/signin" || path === "/signup")) {
      navigate("/", true);
      return;
    }
    if (path !== "/signin" && path !== "/signup") {
      goSignIn();
      return;
    }
    const main = h("main", { id: "main", class: "narrow" });
    replace(app, main);
    document.title = "Sign in · Zehanx";
    signInPage(ctx(main, []), path === "/signup", () => {
      signedIn = true;
      const next = new URLSearchParams(location.search).get("next") || "/";
      navigate(next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
    });
    return;
  }
  for (const [pattern, page, title] of routes) {
    const m = pattern.exec(path);
    if (!m) continue;
    const main = h("main", { id: "main", tabindex: "-1" });
    replace(app, nav(title), main);
    document.title = `${title} · Zehanx`;
    try {
      await page(ctx(main, m.slice(1)));
    } catch (err) {
      if (!current?.signal.aborted) console.error(err);
    }
    return;
  }
  const main = h("main", { id: "main" });
  replace(app, nav(""), main);
  replace(main, h("h1", {}, "Not found"), h("p", {}, "No page here. "), link("/", "Go to the dashboard"));
}

document.addEventListener("click", (ev) => {
  const a = (ev.target as Element | null)?.closest?.("a[data-link]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  navigate(a.getAttribute("href") || "/");
});
window.addEventListener("popstate", () => void render());
whenSessionLost(goSignIn);

async function boot(): Promise<void> {
  const app = document.getElementById("app")!;
  try {
    await loadConfig();
    signedIn = await refresh();
    setReachable(true);
  } catch (err) {
    if (isNetworkError(err)) setReachable(false);
    replace(app, h("main", { id: "main", class: "narrow" }, h("h1", {}, "Zehanx"), h("p", {}, String(err))));
    return;
  }
  document.documentElement.dataset.authMode = authMode();
  await render();
}

void boot();
