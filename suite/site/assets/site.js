// attnbench site: draws the charts its data scripts hand it, and sorts tables by a click on a header.
window.attnbench = {
  charts: {},
  chart(id, figure) {
    const div = document.getElementById(id);
    if (!div) throw new Error(`attnbench: no chart element ${id}`);
    this.charts[id] = figure;
    Plotly.newPlot(div, figure.data, figure.layout, {responsive: true, displaylogo: false}).then(() => {
      // The hovered point's command, whole and selectable, under the chart (its last detail).
      const line = div.parentElement.querySelector(".hovered");
      div.on("plotly_hover", (event) => {
        const point = event.points[0], details = point.customdata;
        line.textContent = `${point.data.name}: ${details[details.length - 1]}`;
      });
    });
  },
};

// A cell sorts as a number only when it is one whole (a date or a commit hash sorts as text).
function attnbenchSortKey(text) {
  const t = text.trim();
  return /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t) ? Number(t) : null;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll("table.sortable")) {
    table.querySelectorAll("thead th").forEach((th, col) => {
      th.title = "sort by this column";
      th.addEventListener("click", () => {
        const body = table.tBodies[0];
        const up = th.dataset.sorted !== "up";
        table.querySelectorAll("thead th").forEach((h) => delete h.dataset.sorted);
        th.dataset.sorted = up ? "up" : "down";
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = a.cells[col].textContent, y = b.cells[col].textContent;
          const nx = attnbenchSortKey(x), ny = attnbenchSortKey(y);
          let c;
          if (nx !== null && ny !== null) c = nx - ny;
          else if (nx !== null) c = -1;  // numbers before statuses and blanks
          else if (ny !== null) c = 1;
          else c = x.localeCompare(y);
          return up ? c : -c;
        });
        rows.forEach((r) => body.appendChild(r));
      });
    });
  }
});
