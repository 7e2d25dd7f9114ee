// Capacity: the headroom per resource (GET /api/capacity) above the grid, and for one camera how many more like
// it fit and which resource binds, with its configured and effective detect fps (degraded under overload).

const NAMES = { inference: "Inference", cpu: "CPU", gpu: "GPU", gpu_memory: "GPU memory" };

function amount(resource, value) {
  if (resource === "gpu_memory") return `${(value / 2 ** 30).toFixed(1)} GiB`;
  if (resource === "cpu") return `${value.toFixed(2)} cores`;
  return `${Math.round(value * 100)} %`;
}

// One chip per resource: used of budget, red when over budget; then the overload governor's state.
export function renderCapacity(node, report) {
  if (!report) {
    node.hidden = true;
    return;
  }
  node.hidden = false;
  const chips = report.resources.map((r) => {
    const chip = document.createElement("span");
    chip.className = `chip ${r.headroom < 0 ? "bad" : r.headroom < 0.1 * r.budget ? "warn" : "ok"}`;
    chip.dataset.resource = r.resource;
    chip.title = `${r.unit}: ${amount(r.resource, r.headroom)} left`;
    chip.textContent = `${NAMES[r.resource] || r.resource} ${amount(r.resource, r.used)} / ${amount(r.resource, r.budget)}`;
    return chip;
  });
  const d = report.degrade;
  const status = document.createElement("span");
  status.className = `chip ${d.degraded.length ? "warn" : d.overloaded ? "bad" : "ok"}`;
  status.dataset.resource = "degrade";
  status.textContent = d.degraded.length
    ? `Degraded: ${d.degraded.join(", ")}`
    : d.overloaded
      ? "Overloaded"
      : report.measured
        ? "No degradation"
        : "Not measured yet";
  const title = document.createElement("strong");
  title.textContent = "Capacity";
  node.replaceChildren(title, ...chips, status);
}

// Rows for a camera's Health panel.
export function capacityRows(stats, report) {
  const rows = [];
  if (stats) {
    const fps = stats.degraded
      ? `${stats.effective_detect_fps.toFixed(2)} of ${stats.detect_fps} fps (degraded)`
      : `${stats.detect_fps} fps`;
    rows.push(["Detect", fps], ["Priority", stats.priority]);
  }
  const fit = report && report.cameras.find((c) => c.camera_id === (stats && stats.camera_id));
  if (fit) {
    rows.push(["More like it fit", fit.fits === null ? "not measured" : `${fit.fits} (${NAMES[fit.binding] || fit.binding} binds)`]);
  }
  return rows;
}
