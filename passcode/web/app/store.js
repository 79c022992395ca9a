// The last pass, kept on the device (localStorage) so the code screen can still show it while
// offline, until it expires. It is a short-lived signed pass (the service's lifetime, 60 s by
// default) with the masked name only; it is removed on sign-out.

const KEY = "passcode.lastPass";
const COLORS = ["green", "yellow", "red"];

/** Keep `pass` (the GET /v1/pass answer) and the server's clock offset at its receipt. */
export function savePass(pass, offsetMs) {
  const kept = {
    code: pass.code,
    color: pass.color,
    issued_at: pass.issued_at,
    expires_at: pass.expires_at,
    holder: pass.holder,
    offset_ms: offsetMs,
  };
  try {
    localStorage.setItem(KEY, JSON.stringify(kept));
  } catch {
    // storage refused or full: the page works, only offline display is lost
  }
}

/** The kept pass, or null when none is kept or it does not look like one. */
export function loadPass() {
  let kept;
  try {
    kept = JSON.parse(localStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
  if (
    !kept ||
    typeof kept.code !== "string" ||
    !kept.code.startsWith("PC1:") ||
    !COLORS.includes(kept.color) ||
    !Number.isFinite(Date.parse(kept.expires_at)) ||
    !kept.holder ||
    typeof kept.holder.name !== "string"
  ) {
    return null;
  }
  return { ...kept, offset_ms: Number(kept.offset_ms) || 0 };
}

export function forgetPass() {
  try {
    localStorage.removeItem(KEY);
  } catch {
    // nothing kept
  }
}
