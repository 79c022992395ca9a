// Sound and vibration with each result, so a guard who is not looking at the screen still
// knows: the patterns differ in rhythm and pitch, not only in tone (admit: two short high
// beeps; deny: one long low tone; invalid or not verified: three short low beeps).

const PATTERNS = {
  admit: { tones: [[880, 0.12], [0, 0.06], [880, 0.12]], vibrate: [80] },
  deny: { tones: [[220, 0.6]], vibrate: [300, 100, 300] },
  invalid: { tones: [[330, 0.1], [0, 0.06], [330, 0.1], [0, 0.06], [330, 0.1]], vibrate: [100, 60, 100, 60, 100] },
  unverified: { tones: [[330, 0.1], [0, 0.06], [330, 0.1], [0, 0.06], [330, 0.1]], vibrate: [100, 60, 100, 60, 100] },
};

let audio = null;

/** Create (or resume) the audio context; browsers allow it only after a user gesture, so the
 * page calls this from its buttons. */
export function unlockAudio() {
  const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
  if (!Context) return;
  if (audio === null) audio = new Context();
  if (audio.state === "suspended") audio.resume().catch(() => {});
}

function beep(tones) {
  if (audio === null || audio.state !== "running") return;
  let at = audio.currentTime;
  for (const [frequency, seconds] of tones) {
    if (frequency > 0) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.2, at);
      gain.gain.setValueAtTime(0, at + seconds);
      osc.connect(gain).connect(audio.destination);
      osc.start(at);
      osc.stop(at + seconds);
    }
    at += seconds;
  }
}

/** Play the sound and vibration of a decision (admit, deny, invalid, unverified). */
export function signal(decision) {
  const pattern = PATTERNS[decision] ?? PATTERNS.invalid;
  beep(pattern.tones);
  if (typeof navigator.vibrate === "function") navigator.vibrate(pattern.vibrate);
}
