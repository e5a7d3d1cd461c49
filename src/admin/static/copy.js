// scimbridge admin: the copy buttons, the page's only script (served from the binary;
// the Content-Security-Policy allows no inline script). A button with
// data-copy="ID" copies the value (or text) of the element with that id. Without
// JavaScript the buttons stay hidden and the text can be selected by hand.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = "value" in target ? target.value : target.textContent;
      var done = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {
          button.textContent = "Select and copy by hand";
        });
      } else if (target.select) {
        target.select();
        button.textContent = document.execCommand("copy") ? "Copied" : "Select and copy by hand";
      }
    });
  });
});
