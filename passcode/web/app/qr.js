// The pass's QR code drawn on the device from its text (uqr, from npm: one request fetches the
// pass, and the last pass can be drawn again offline). Level M, a 4-module quiet zone, as the
// service's own pass.svg; dark modules in the status colour (app.css).
import { encode } from "/vendor/uqr.mjs";

const SVG_NS = "http://www.w3.org/2000/svg";

/** Replace the content of `container` with the QR code of `text`, coloured for `color`. */
export function drawQr(container, text, color) {
  const { data, size } = encode(text, { ecc: "M", border: 4 });
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", `qr qr-${color}`);
  const background = document.createElementNS(SVG_NS, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("class", "qr-light");
  const parts = [];
  data.forEach((row, y) => {
    let x = 0;
    while (x < size) {
      if (!row[x]) {
        x += 1;
        continue;
      }
      const start = x;
      while (x < size && row[x]) x += 1;
      parts.push(`M${start} ${y}h${x - start}v1h-${x - start}z`);
    }
  });
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", parts.join(""));
  path.setAttribute("class", "qr-dark");
  svg.append(background, path);
  container.replaceChildren(svg);
}
