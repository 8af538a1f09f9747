// The ssd_fast._C module: a plain Python module (importing it loads the kernels) and the
// schemas of every op. Kernels register themselves in ops/cpu/*.cpp and ops/cuda/*.cu.
#include <Python.h>
#include <torch/library.h>

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

TORCH_LIBRARY(ssd_fast, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("encode_boxes(Tensor gt, Tensor priors, float[] variances) -> Tensor");
  m.def("decode_boxes(Tensor offsets, Tensor priors, float[] variances) -> Tensor");
  m.def("match_priors(Tensor gt_boxes, Tensor gt_labels, Tensor priors, float iou_threshold, "
        "str mode) -> (Tensor, Tensor)");
  m.def("ssd_targets(Tensor gt_boxes, Tensor gt_labels, Tensor priors, float iou_threshold, "
        "float[] variances, str mode) -> (Tensor, Tensor, Tensor)");
  m.def("hard_negative_mining(Tensor conf_loss, Tensor labels, float neg_pos_ratio, "
        "Tensor? matched_iou, float neg_overlap) -> Tensor");
  m.def("multibox_loss(Tensor loc, Tensor conf_logits, Tensor loc_targets, Tensor labels, "
        "float neg_pos_ratio) -> (Tensor, Tensor, Tensor)");
  m.def("multibox_loss_backward(Tensor grad_loc_loss, Tensor grad_conf_loss, Tensor loc, "
        "Tensor conf_logits, Tensor loc_targets, Tensor labels, Tensor mask) -> (Tensor, Tensor)");
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def("multiclass_nms(Tensor boxes, Tensor scores, float score_threshold, float iou_threshold, "
        "int topk_per_class, int max_detections, int background_class) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("ssd_postprocess(Tensor loc, Tensor conf_logits, Tensor priors, float[] variances, "
        "bool clip, float score_threshold, float iou_threshold, int topk_per_class, "
        "int max_detections, int background_class) -> (Tensor, Tensor, Tensor, Tensor)");
}
