"""The ground floor: errors, atomic writes and locks, seeding, lead names, config loading and the typed
stage configs, and the files shipped inside the package. Imports nothing else of ecglm."""
