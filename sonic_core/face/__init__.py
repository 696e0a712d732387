"""The portrait's face: one box type (:mod:`.box`), every detector (:mod:`.haar`, :mod:`.yolo`, chosen and run by
:mod:`.detect`) and the square crop, mask and resize the pipeline conditions on (:mod:`.crop`). MODEL.md §3."""
