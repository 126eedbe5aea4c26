// Shows the DA-CLIP detection report on the "DA-CLIP Detect Degradation" node, the way the core
// "Preview Any" node shows its value: a read-only text box that is filled when the node has run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

app.registerExtension({
  name: "daclip.DetectDegradation.report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "DACLIPDetectDegradation") {
      return;
    }
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, []);
      const widget = ComfyWidgets["STRING"](this, "report_preview", ["STRING", { multiline: true }], app).widget;
      widget.element.readOnly = true;
      widget.serialize = false; // not a node input: kept out of widgets_values
      widget.options.serialize = false; // ... and out of the prompt graphToPrompt() sends
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, [message]);
      const widget = this.widgets?.find((w) => w.name === "report_preview");
      if (widget && message?.text) {
        widget.value = message.text.join("\n");
      }
    };
  },
});
