// REST calls with the API key: a bearer header on fetches, ?token= where the browser cannot set headers
// (<img>, EventSource).

const KEY_STORAGE = "streamsrv.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

// A URL for an <img> or EventSource, carrying the key as ?token= when one is set.
export function tokenUrl(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const key = apiKey();
  if (key) url.searchParams.set("token", key);
  return url.pathname + url.search;
}

// FastAPI errors are {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}]}: name the field.
function describe(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`)
      .join("; ");
  }
  return `HTTP ${status}`;
}

export async function api(path, { method = "GET", body, keepalive = false } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    keepalive,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("streamsrv:unauthorized"));
    throw new ApiError(resp.status, describe(data, resp.status));
  }
  return data;
}
