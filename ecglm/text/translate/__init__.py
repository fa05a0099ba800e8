"""The ``translate`` stage: PTB-XL report language detection and translation to English.

Modules: reports (normalisation, Edit: notes, the auto-report tail, truncation), langdetect
(de/en/sv from the text alone), glossary (the offline phrase-table backend and its data in
ecglm/text/translate/glossary/), translator (the Translator protocol and the glossary backend behind it),
openai_backend (an OpenAI-compatible endpoint), cache (the persistent translation cache), stage
(the stage itself), cli (``ecglm translate``), evaluation and hunspell (independent checks).
Heavy imports stay inside functions.
"""
