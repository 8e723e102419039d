// The live page: camera frames and photos go to the server (serve.py), one request at a time; the faces it
// finds come back as JSON and are drawn as boxes over the picture. No library, no build step.
"use strict";

const FRAME_WIDTH = 640; // camera frames are sent at most this wide: the server's detector is tuned for it
const JPEG_QUALITY = 0.85; // small frames, and the detector does not miss the rest
const $ = (id) => document.getElementById(id);

let stream = null; // the camera, while it runs
const csvRows = []; // the photos' faces.csv rows, in the order the photos were read
let csvColumns = null;

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

// POST a picture; the server's JSON, or an Error that carries the server's one-line message
async function findFaces(blob, kind, name) {
  const query = new URLSearchParams({ kind, name });
  let response;
  try {
    // the picture's own type (image/jpeg for camera frames); the server takes no other: a page on another site
    // cannot send one without the browser asking the server first, and this server says no
    const headers = { "Content-Type": blob.type || "application/octet-stream" };
    response = await fetch(`/api/faces?${query}`, { method: "POST", body: blob, headers });
  } catch {
    throw new Error("The server cannot be reached: is serve.py still running?");
  }
  const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(answer.error);
  return answer;
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

// each face's box, label and the bar of its seven probabilities, placed in the picture's own proportions
function drawFaces(overlay, answer) {
  overlay.replaceChildren();
  for (const face of answer.faces) {
    const box = document.createElement("div");
    box.className = "box";
    box.style.left = `${(100 * face.x) / answer.width}%`;
    box.style.top = `${(100 * face.y) / answer.height}%`;
    box.style.width = `${(100 * face.side) / answer.width}%`;
    box.style.height = `${(100 * face.side) / answer.height}%`;
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = `${face.label} ${percent(face.probs[face.label])}`;
    const bars = document.createElement("div");
    bars.className = "bars";
    for (const [name, p] of Object.entries(face.probs)) {
      const bar = document.createElement("div");
      bar.className = "bar";
      const label = document.createElement("span");
      label.textContent = name;
      const fill = document.createElement("i");
      fill.style.width = percent(p);
      const value = document.createElement("b");
      value.textContent = percent(p);
      bar.append(label, fill, value);
      bars.append(bar);
    }
    box.append(tag, bars);
    overlay.append(box);
  }
}

// --- the camera: grab a frame, send it, draw the answer, and at once the next frame ---

function cameraProblem(error) {
  if (!navigator.mediaDevices) {
    return "This browser gives no camera to this page: open it as http://127.0.0.1 or http://localhost.";
  }
  if (error.name === "NotAllowedError" || error.name === "SecurityError") {
    return "The camera was refused. Allow it in the browser's site settings, then press Start again.";
  }
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return "No camera was found. Plug one in, or drop photos below.";
  }
  if (error.name === "NotReadableError") {
    return "The camera is busy: another program is using it.";
  }
  return `The camera could not start (${error.name || error.message}).`;
}

async function startCamera() {
  showMessage("");
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    showMessage(cameraProblem(error));
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play().catch(() => {});
  $("live").hidden = false;
  $("start").disabled = true;
  $("stop").disabled = false;
  liveLoop(stream);
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("video").srcObject = null;
  $("live").hidden = true;
  $("live").querySelector(".overlay").replaceChildren();
  $("start").disabled = false;
  $("stop").disabled = true;
  $("rate").textContent = "";
}

function nextFrame(video) {
  return new Promise((resolve) => {
    if (video.videoWidth) resolve();
    else video.addEventListener("loadeddata", resolve, { once: true });
  });
}

async function liveLoop(running) {
  const video = $("video");
  const overlay = $("live").querySelector(".overlay");
  const canvas = document.createElement("canvas");
  let frames = 0;
  let since = performance.now();
  while (stream === running) {
    await nextFrame(video);
    const scale = Math.min(1, FRAME_WIDTH / video.videoWidth);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    let answer;
    try {
      answer = await findFaces(blob, "frame", "camera");
    } catch (error) {
      showMessage(error.message);
      stopCamera();
      return;
    }
    if (stream !== running) return; // stopped while the frame was out
    drawFaces(overlay, answer);
    frames += 1;
    const seconds = (performance.now() - since) / 1000;
    if (seconds >= 1) {
      $("rate").textContent = `${(frames / seconds).toFixed(1)} frames/s, ${answer.faces.length} face(s)`;
      frames = 0;
      since = performance.now();
    }
  }
}

// --- photos: each one sent as it is, shown with its boxes, and its rows added to faces.csv ---

function csvField(value) {
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function updateDownload() {
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  const lines = [csvColumns, ...csvRows].map((row) => row.map(csvField).join(","));
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.hidden = false;
  $("count").textContent = `${csvRows.length} face(s) in ${$("results").children.length} photo(s)`;
}

function isImage(file) {
  return file.type ? file.type.startsWith("image/") : true; // no type given: the server decides
}

async function readPhotos(files) {
  showMessage("");
  const problems = [];
  for (const file of files) {
    if (!isImage(file)) {
      problems.push(`${file.name} is not an image (${file.type}).`);
      continue;
    }
    let answer;
    try {
      answer = await findFaces(file, "photo", file.name);
    } catch (error) {
      problems.push(error.message);
      continue;
    }
    const figure = document.createElement("div");
    figure.className = "photo";
    const caption = document.createElement("p");
    caption.textContent = `${file.name}: ${answer.faces.length} face(s), ${answer.ms} ms`;
    const stage = document.createElement("div");
    stage.className = "stage";
    const img = document.createElement("img");
    img.alt = file.name;
    img.src = URL.createObjectURL(file);
    const overlay = document.createElement("div");
    overlay.className = "overlay";
    stage.append(img, overlay);
    figure.append(caption, stage);
    $("results").prepend(figure);
    drawFaces(overlay, answer);
    csvColumns = answer.columns;
    csvRows.push(...answer.rows);
    updateDownload();
  }
  showMessage(problems.join(" "));
}

$("start").addEventListener("click", startCamera);
$("stop").addEventListener("click", stopCamera);
$("files").addEventListener("change", (event) => {
  readPhotos([...event.target.files]);
  event.target.value = ""; // the same file may be chosen again
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  readPhotos([...event.dataTransfer.files]);
});
