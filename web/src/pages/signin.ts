// Sign in / sign up with email and password (the edge's accounts, or Supabase Auth).
import { h, field, link, notice, replace } from "../dom.js";
import { AuthError, authMode, signIn, signUp } from "../auth.js";
import { setReachable } from "../api.js";
import type { PageContext } from "../main.js";

export function signInPage(ctx: PageContext, isSignUp: boolean, done: () => void): void {
  const emailInput = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: isSignUp ? "new-password" : "current-password",
    required: true,
    minlength: isSignUp ? 8 : null,
  });
  const status = h("div", { id: "auth-status", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, isSignUp ? "Create account" : "Sign in");
  const form = h(
    "form",
    { id: isSignUp ? "sign-up-form" : "sign-in-form", novalidate: false },
    field("Email", emailInput),
    field("Password", password, isSignUp ? "8 characters or more." : undefined),
    submit,
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    replace(status);
    try {
      if (isSignUp) {
        if (!(await signUp(emailInput.value.trim(), password.value))) {
          replace(status, notice("info", "Account created: confirm it from the email you were sent, then sign in."));
          return;
        }
      } else {
        await signIn(emailInput.value.trim(), password.value);
      }
      setReachable(true);
      done();
    } catch (err) {
      if (err instanceof AuthError && err.network) setReachable(false);
      replace(status, notice("error", err instanceof Error ? err.message : String(err)));
    } finally {
      submit.disabled = false;
    }
  });
  const next = location.search;
  replace(
    ctx.root,
    h("h1", {}, "Zehanx"),
    h("p", { class: "lead" }, "Describe a model in a sentence; watch it train; download or try it."),
    h("h2", {}, isSignUp ? "Create an account" : "Sign in"),
    authMode() === "supabase" ? h("p", { class: "hint" }, "Accounts are managed by Supabase Auth.") : null,
    form,
    h(
      "p",
      {},
      isSignUp ? "Have an account? " : "New here? ",
      link((isSignUp ? "/signin" : "/signup") + next, isSignUp ? "Sign in" : "Create an account"),
    ),
  );
  emailInput.focus();
}
