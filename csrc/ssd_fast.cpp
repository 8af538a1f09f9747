// The ssd_fast._C module: a plain Python module (importing it loads the kernels) and the
// schemas of every op. Kernels register themselves in ops/cpu/*.cpp and ops/cuda/*.cu, the
// meta functions in ops/meta.cpp.
#include <Python.h>
#include <torch/library.h>

#include <string>

#define SSD_FAST_STR2(x) #x
#define SSD_FAST_STR(x) SSD_FAST_STR2(x)

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "ssd_fast kernels (registered as torch.ops.ssd_fast.*)", -1,
      nullptr};
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  // What this binary was built against, checked by ssd_fast/__init__.py.
  if (PyModule_AddStringConstant(m, "TORCH_VERSION", SSD_FAST_STR(SSD_FAST_TORCH_VERSION)) < 0 ||
#ifdef SSD_FAST_WITH_CUDA
      PyModule_AddIntConstant(m, "WITH_CUDA", 1) < 0
#else
      PyModule_AddIntConstant(m, "WITH_CUDA", 0) < 0
#endif
  ) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
}

namespace {

// Defines op `name(args) -> returns` and its meta function `_name_meta(args)` (ops/meta.cpp),
// which returns the same outputs where their shapes follow from the input shapes, else nothing.
void def_op(torch::Library& m, const std::string& name, const std::string& args,
            const std::string& returns, bool fixed_shape = true) {
  m.def((name + "(" + args + ") -> " + returns).c_str());
  m.def(("_" + name + "_meta(" + args + ") -> " + (fixed_shape ? returns : "()")).c_str());
}

}  // namespace

TORCH_LIBRARY(ssd_fast, m) {
  def_op(m, "box_iou", "Tensor boxes1, Tensor boxes2", "Tensor");
  def_op(m, "encode_boxes", "Tensor gt, Tensor priors, float[] variances", "Tensor");
  def_op(m, "decode_boxes", "Tensor offsets, Tensor priors, float[] variances", "Tensor");
  def_op(m, "match_priors",
         "Tensor gt_boxes, Tensor gt_labels, Tensor priors, float iou_threshold, str mode",
         "(Tensor, Tensor)");
  def_op(m, "ssd_targets",
         "Tensor gt_boxes, Tensor gt_labels, Tensor priors, float iou_threshold, "
         "float[] variances, str mode",
         "(Tensor, Tensor, Tensor)");
  def_op(m, "hard_negative_mining",
         "Tensor conf_loss, Tensor labels, float neg_pos_ratio, Tensor? matched_iou, "
         "float neg_overlap",
         "Tensor");
  def_op(m, "multibox_loss",
         "Tensor loc, Tensor conf_logits, Tensor loc_targets, Tensor labels, float neg_pos_ratio",
         "(Tensor, Tensor, Tensor)");
  def_op(m, "multibox_loss_backward",
         "Tensor grad_loc_loss, Tensor grad_conf_loss, Tensor loc, Tensor conf_logits, "
         "Tensor loc_targets, Tensor labels, Tensor mask",
         "(Tensor, Tensor)");
  def_op(m, "nms", "Tensor boxes, Tensor scores, float iou_threshold", "Tensor",
         /*fixed_shape=*/false);
  def_op(m, "batched_nms", "Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold",
         "Tensor", /*fixed_shape=*/false);
  def_op(m, "multiclass_nms",
         "Tensor boxes, Tensor scores, float score_threshold, float iou_threshold, "
         "int topk_per_class, int max_detections, int background_class",
         "(Tensor, Tensor, Tensor, Tensor)");
  def_op(m, "ssd_postprocess",
         "Tensor loc, Tensor conf_logits, Tensor priors, float[] variances, bool clip, "
         "float score_threshold, float iou_threshold, int topk_per_class, int max_detections, "
         "int background_class",
         "(Tensor, Tensor, Tensor, Tensor)");
}
