// The declaration form (申报): checked on the device with the API's own rules (DeclarationRequest
// in /openapi.json), sent with an Idempotency-Key made per submission (a retry after a lost
// answer sends the same key with the same body, so it is filed once), and the API's 400
// problem bodies shown next to the field they name.
import { ApiError, NetworkError, callApi, randomId } from "../common/api.js";
import { bind, msg } from "../common/i18n.js";

export const TEMPERATURE = { min: 30, max: 45 };
export const MAX_REGIONS = 32;
export const MAX_REGION_LENGTH = 64;
// What the service's text rule refuses (passcode.domain.fields.line): control characters, line
// separators, invisible format characters (bidirectional controls).
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]/u;
const FIELDS = ["temperature_c", "symptoms", "regions_visited", "close_contact"];

function byId(id) {
  return document.getElementById(id);
}

/** The regions typed, one per line or separated by commas, trimmed, blanks and repeats dropped. */
export function parseRegions(text) {
  const seen = new Set();
  for (const part of text.split(/[\n,，、;；]/u)) {
    const region = part.trim();
    if (region) seen.add(region);
  }
  return [...seen];
}

/** The form's answers as a request body and the error of each field that is not valid. */
export function readForm() {
  const errors = {};
  const raw = byId("temperature").value.trim().replace(",", ".");
  let temperature = null;
  if (raw === "") errors.temperature_c = msg("declare.error.temperature_missing");
  else if (!/^\d{2}(\.\d{1,2})?$/.test(raw)) errors.temperature_c = msg("declare.error.temperature_number");
  else {
    temperature = Number(raw);
    if (temperature < TEMPERATURE.min || temperature > TEMPERATURE.max) {
      errors.temperature_c = msg("declare.error.temperature_range", TEMPERATURE);
    }
  }
  const symptoms = [...document.querySelectorAll("input[name=symptoms]:checked")].map((box) => box.value);
  const regions = parseRegions(byId("regions").value);
  if (regions.length > MAX_REGIONS) {
    errors.regions_visited = msg("declare.error.regions_too_many", { max: MAX_REGIONS });
  } else {
    const tooLong = regions.find((region) => [...region].length > MAX_REGION_LENGTH);
    const refused = regions.find((region) => FORBIDDEN.test(region));
    if (tooLong !== undefined) {
      errors.regions_visited = msg("declare.error.region_too_long", { max: MAX_REGION_LENGTH });
    } else if (refused !== undefined) {
      errors.regions_visited = msg("declare.error.region_invalid");
    }
  }
  const contact = document.querySelector("input[name=close_contact]:checked");
  if (contact === null) errors.close_contact = msg("declare.error.contact_missing");
  const body = {
    temperature_c: temperature,
    symptoms,
    regions_visited: regions,
    close_contact: contact !== null && contact.value === "true",
  };
  return { body, errors };
}

/** The field a 400 problem body names (its `errors` entries, else its detail), or null. */
export function fieldOfProblem(problem) {
  if (!problem) return null;
  const texts = [...(Array.isArray(problem.errors) ? problem.errors : []), String(problem.detail || "")];
  for (const text of texts) {
    const found = FIELDS.find((field) => String(text).includes(field));
    if (found) return found;
  }
  return null;
}

const ERROR_IDS = {
  temperature_c: ["temperature", "temperature-error"],
  symptoms: ["symptom-fever", "symptoms-error"],
  regions_visited: ["regions", "regions-error"],
  close_contact: ["close-contact-no", "close-contact-error"],
};

/**
 * The form's controller: `token()` resolves to the ID token; `declared(answer)` is called with
 * the 201 answer; `signedOut()` on a 401.
 */
export function createDeclareForm({ token, declared, signedOut }) {
  const form = byId("declare-form");
  const submit = byId("declare-submit");
  const summary = byId("declare-error");
  let pending = null; // {key, text}: the last submission whose answer never came

  function showErrors(errors, details = {}) {
    let first = null;
    for (const field of FIELDS) {
      const [inputId, errorId] = ERROR_IDS[field];
      const input = byId(inputId);
      const target = byId(errorId);
      const detail = byId(`${errorId}-detail`);
      const ref = errors[field];
      const invalid = ref !== undefined;
      target.hidden = !invalid;
      bind(byId(`${errorId}-text`), invalid ? ref : null);
      detail.textContent = invalid && details[field] ? details[field] : "";
      detail.hidden = !(invalid && details[field]);
      for (const box of field === "symptoms" || field === "close_contact"
        ? form.querySelectorAll(`input[name=${field}]`)
        : [input]) {
        if (invalid) box.setAttribute("aria-invalid", "true");
        else box.removeAttribute("aria-invalid");
      }
      if (invalid && first === null) first = input;
    }
    const count = Object.keys(errors).length;
    summary.hidden = count === 0;
    bind(summary, count === 0 ? null : msg("declare.error.summary", { count }));
    if (first !== null) first.focus();
  }

  function showFormError(ref) {
    showErrors({});
    summary.hidden = false;
    bind(summary, ref);
  }

  async function send(body) {
    const text = JSON.stringify(body);
    const key = pending !== null && pending.text === text ? pending.key : randomId();
    pending = { key, text };
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await callApi("POST", "/v1/declarations", {
        token: await token(),
        body,
        headers: { "Idempotency-Key": key },
      });
      pending = null;
      showErrors({});
      form.reset();
      declared(answer);
    } catch (error) {
      if (error instanceof NetworkError) {
        showFormError(msg("declare.error.network"));
      } else if (error instanceof ApiError && error.status === 401) {
        pending = null;
        signedOut();
      } else if (error instanceof ApiError && error.status === 400) {
        pending = null;
        const field = fieldOfProblem(error.problem);
        const detail = error.problem ? String(error.problem.detail || "") : "";
        if (field !== null) showErrors({ [field]: msg("declare.error.server") }, { [field]: detail });
        else showFormError(msg("declare.error.rejected"));
      } else if (error instanceof ApiError && error.status === 429) {
        showFormError(msg("declare.error.rate_limited", { seconds: error.retryAfter || 1 }));
      } else if (error instanceof ApiError && error.status === 409) {
        pending = null; // the key was used for another body: the next try takes a new one
        showFormError(msg("declare.error.rejected"));
      } else {
        showFormError(msg("declare.error.unavailable"));
      }
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { body, errors } = readForm();
    if (Object.keys(errors).length > 0) {
      showErrors(errors);
      return;
    }
    send(body);
  });
  return { reset: () => showErrors({}) };
}
