"""Running a network on an image: the tile engine (:mod:`.tiles`), the backends over torch and
onnxruntime (:mod:`.backends`), their precision rules (:mod:`.precision`) and tile plan
(:mod:`.plan`)."""
