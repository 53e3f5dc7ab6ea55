// The upload form: an option that does not apply to the kind of file chosen (an
// activities file creates nothing: "Create what is missing") is hidden, and is sent
// unticked. Without JavaScript it shows and is ignored for that kind.
(function () {
  "use strict";
  const form = document.querySelector("form[enctype='multipart/form-data']");
  if (!form) return;
  const options = form.querySelectorAll("[data-kinds]");

  function update() {
    const checked = form.querySelector("input[name='kind']:checked");
    const kind = checked ? checked.value : "";
    options.forEach((option) => {
      const applies = option.dataset.kinds.split(" ").includes(kind);
      option.hidden = !applies;
      option.querySelectorAll("input").forEach((input) => {
        input.disabled = !applies;
      });
    });
  }

  form.querySelectorAll("input[name='kind']").forEach((radio) => {
    radio.addEventListener("change", update);
  });
  update();
})();
