// Follow the system's dark mode, now and when it changes.
(function () {
  const query = window.matchMedia("(prefers-color-scheme: dark)");
  const apply = () => document.documentElement.setAttribute("data-bs-theme", query.matches ? "dark" : "light");
  apply();
  query.addEventListener("change", apply);
})();
