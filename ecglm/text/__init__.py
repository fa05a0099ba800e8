"""Stage family 2, the text: translate the reports, describe the features by guideline rules, the prompt
strings, and the lead-drop expansion of the training samples."""
