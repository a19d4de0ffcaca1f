"""Structured outputs by constrained decoding.

`requests` reads the request fields (response format, tool choice, strict tools) into an
`OutputSpec` (`spec`, engine-neutral); `grammar`, the only module that knows the grammar engine
(llguidance), compiles it into the `SamplingParams.constraint` that the engine's `Sampler` masks
logits with, one matcher per sample.
"""
