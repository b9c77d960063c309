// The dashboard shell: sign-in (when the server has keys), the key's role, and a hash router.
import {get, getKey, onUnauthorized, setKey} from "./api.js";
import {collectionPage, collectionsPage} from "./collections.js";
import {errorBox, h, mount} from "./dom.js";
import {modelPage, modelsPage} from "./models.js";
import {searchPage} from "./search.js";

const main = document.getElementById("main");
const who = document.getElementById("who");

// What the pages know about the user: role "admin" | "read", and whether the server has keys at all.
export const session = {role: null, auth: false};

const ROUTES = [
  [/^#\/collections\/([^/?]+)$/, (m) => collectionPage(main, session, decodeURIComponent(m[1]))],
  [/^#\/collections\/?$/, () => collectionsPage(main, session)],
  [/^#\/search(?:\/([^/?]+))?(?:\?(.*))?$/, (m) => searchPage(main, session, m[1] ? decodeURIComponent(m[1]) : null,
    new URLSearchParams(m[2] || ""))],
  [/^#\/models\/([^/?]+)$/, (m) => modelPage(main, session, decodeURIComponent(m[1]))],
  [/^#\/models\/?$/, () => modelsPage(main, session)],
];

function signIn(message) {
  session.role = null;
  who.replaceChildren();
  const input = h("input", {type: "password", id: "api-key", name: "api-key", autocomplete: "off", size: 40,
    placeholder: "API key", required: true});
  const form = h("form", {class: "card signin", id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    await start();
  }},
  h("h2", {}, "Sign in"),
  h("p", {}, "This server requires an API key (admin or read-only). It is kept in this tab's session storage " +
    "only and sent as ", h("code", {}, "Authorization: Bearer <key>"), "."),
  message ? errorBox(message) : null,
  h("label", {for: "api-key"}, "API key "), input, " ", h("button", {type: "submit"}, "Sign in"));
  mount(main, form);
  input.focus();
}

function showWho() {
  const badge = h("span", {class: `badge role-${session.role}`, id: "role"}, session.role === "admin" ? "admin" :
    "read-only");
  const out = session.auth ? h("button", {type: "button", class: "small", id: "signout", onclick: () => {
    setKey("");
    signIn(null);
  }}, "Sign out") : h("span", {class: "muted"}, " (no keys configured)");
  mount(who, badge, " ", out);
}

async function route() {
  if (!session.role) return;
  const hash = location.hash || "#/collections";
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active",
    hash.startsWith(`#/${a.dataset.nav}`)));
  for (const [re, render] of ROUTES) {
    const m = hash.match(re);
    if (m) {
      try {
        await render(m);
      } catch (err) {
        if (err.status !== 401) mount(main, errorBox(err));
      }
      return;
    }
  }
  mount(main, errorBox(`no page ${hash}`));
}

async function start() {
  try {
    const {data} = await get("/v1/whoami", {quiet401: true});
    Object.assign(session, data);
  } catch (err) {
    if (err.status === 401) {
      signIn(getKey() ? err : null);
      return;
    }
    mount(main, errorBox(err));
    return;
  }
  showWho();
  await route();
}

onUnauthorized((err) => signIn(err));
window.addEventListener("hashchange", route);
start();
