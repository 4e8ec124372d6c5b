"""The per-call Pipecat pipeline: transport, serializer, Gemini Live, personas, call control."""
