// Calls to the public /v1 API with the key the user typed (kept in this tab's sessionStorage only).
const STORAGE_KEY = "vqsearch.apiKey";

export function getKey() {
  return sessionStorage.getItem(STORAGE_KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(STORAGE_KEY, key);
  else sessionStorage.removeItem(STORAGE_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Listeners told about a 401 anywhere (the app shows the sign-in form).
const unauthorized = new Set();
export function onUnauthorized(fn) { unauthorized.add(fn); }

function headers(json) {
  const out = {};
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

// → {data, ms, status}; throws ApiError with the server's {"error", "message"} on 4xx/5xx.
export async function api(method, path, body, {quiet401 = false} = {}) {
  const t0 = performance.now();
  let response;
  try {
    response = await fetch(path, {method, headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, "network_error", `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  const ms = performance.now() - t0;
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const err = new ApiError(response.status, data && data.error ? data.error : "http_error",
      data && data.message ? data.message : (text || response.statusText));
    if (response.status === 401 && !quiet401) unauthorized.forEach((fn) => fn(err));
    throw err;
  }
  return {data, ms, status: response.status};
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body) => api("POST", path, body);
export const del = (path) => api("DELETE", path);

export const enc = encodeURIComponent;

// Download a URL of the API as a file: with a key the request needs its header, so fetch it as a blob.
export async function download(url, filename) {
  const r = await fetch(url, {headers: headers(false)});
  if (!r.ok) {
    let message = r.statusText;
    try { message = (await r.json()).message; } catch { /* not JSON */ }
    throw new ApiError(r.status, "download_failed", message);
  }
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
