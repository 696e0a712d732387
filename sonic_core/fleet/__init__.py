"""The service side that drives ComfyUI servers: a client of one server's API (:mod:`.comfy_client`), batches of
clips as studios write them (:mod:`.jobs`), the batch's state across runs (:mod:`.state`) and the dispatcher that
prices, sends, follows and downloads (:mod:`.batch`)."""
