"""The teacher stage of MulCoT-RD: five-field reasoning chains for labelled posts from a large MLLM.

`annotate` runs the job; `openai_api` and `hf_local` are the two teacher backends behind one
`Teacher` interface (`base`); `cache` keeps every answer on disk so no request is paid for twice.
"""
