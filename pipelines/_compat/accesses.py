"""The compat table: every private name of a library (Pipecat, google-genai, asyncio) we touch.

One row per (owner, name): the owning class (``module:Qualname``) or module, the private name,
the files that touch it, and the upstream change (or our own rewrite on a public seam) that
would retire it. ``pipelines._compat.check()`` verifies at start that each name exists in the
installed libraries; ``tests/test_private_access.py`` fails when our code touches a Pipecat or
google-genai private name that is not listed here. Issue 11's goal is under 10 rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateAccess:
    """One private library name our code touches.

    Attributes:
        owner: ``package.module:Class.Nested`` for a class, ``package.module`` for a module.
        name: The private attribute (method, class or instance attribute, submodule).
        used_in: Repository paths of the files that touch it.
        retire: The upstream change or public seam that would make it unnecessary.
    """

    owner: str
    name: str
    used_in: tuple[str, ...]
    retire: str


def _group(owner: str, retire: str, names_by_file: dict[str, str]) -> list[PrivateAccess]:
    """Rows for one owner: ``{file: "name name ..."}`` -> one row per name, files merged."""
    files: dict[str, list[str]] = {}
    for path, names in names_by_file.items():
        for name in names.split():
            files.setdefault(name, []).append(path)
    return [PrivateAccess(owner, name, tuple(paths), retire) for name, paths in files.items()]


# What would retire each cluster (the plan for the next step of issue 11).
R_GEMINI = (
    "own the Live service on google-genai's public AsyncSession (send_realtime_input, "
    "receive) as a FrameProcessor, or upstream overridable public hooks in "
    "GeminiLiveLLMService (send audio, session ready, server message, reconnect)"
)
R_OUTPUT = (
    "own the output transport on the public FrameProcessor base (paced writer of our own), "
    "or an upstream public per-destination audio sink/queue hook in BaseOutputTransport"
)
R_VAD = (
    "implement the public VADAnalyzer interface (voice_confidence, num_frames_required, "
    "analyze_audio) in our own class instead of subclassing Silero's internals"
)
R_SERIALIZER = "own a FrameSerializer on the public base instead of subclassing Twilio's"
R_TRANSPORT = (
    "an upstream public register_event_handler on BaseObject, and transports built on "
    "the public BaseTransport constructor arguments (name)"
)
R_RECEIVE = (
    "an upstream public raw-message hook or faster decode in google-genai AsyncSession.receive"
)
R_CONVERTERS = (
    "google-genai exposing the setup/server-message converters publicly "
    "(or our own setup builder from the public types' model_dump)"
)
R_SETUP = (
    "a public google-genai way to render the BidiGenerateContent setup message "
    "(or building it from LiveConnectConfig.model_dump ourselves)"
)
R_CALLER_AUDIO = (
    "an upstream public audio-input seam on LLMUserAggregator (VAD without a queue hop), "
    "or our own turn-taking FrameProcessor on public frames"
)
R_TURN = "an upstream constructor flag to silence the stop_secs advice for speech-to-speech"
R_QUEUE = "our own deque-backed output queue instead of peeking into asyncio.Queue"
R_PROBE = "none upstream (asyncio has no per-callback hook); opt-in benchmark probe only"

ACCESSES: tuple[PrivateAccess, ...] = (
    *_group(
        "asyncio.events:Handle",
        R_PROBE,
        {
            "bot/stall_probe.py": "_run",
        },
    ),
    *_group(
        "asyncio:Queue",
        R_QUEUE,
        {
            "pipelines/twilio/output_queue.py": "_queue",
        },
    ),
    *_group(
        "google.genai",
        R_SETUP,
        {
            "pipelines/personas/setup.py": "_common",
        },
    ),
    *_group(
        "google.genai",
        R_CONVERTERS,
        {
            "pipelines/gemini/live_receive.py": "_live_converters",
            "pipelines/personas/setup.py": "_live_converters",
        },
    ),
    *_group(
        "google.genai._live_converters",
        R_SETUP,
        {
            "pipelines/personas/setup.py": "_LiveConnectParameters_to_mldev",
        },
    ),
    *_group(
        "google.genai._live_converters",
        R_RECEIVE,
        {
            "pipelines/gemini/live_receive.py": "_LiveServerMessage_from_mldev",
        },
    ),
    *_group(
        "google.genai.client:Client",
        R_SETUP,
        {
            "pipelines/personas/setup.py": "_api_client",
        },
    ),
    *_group(
        "google.genai.live",
        R_SETUP,
        {
            "pipelines/personas/setup.py": "_t_live_connect_config",
        },
    ),
    *_group(
        "google.genai.live:AsyncSession",
        R_RECEIVE,
        {
            "pipelines/gemini/live_receive.py": "_api_client _receive _ws",
            "pipelines/gemini/service.py": "_api_client _ws",
        },
    ),
    *_group(
        "google.genai.types:LiveServerMessage",
        R_RECEIVE,
        {
            "pipelines/gemini/live_receive.py": "_from_response",
        },
    ),
    *_group(
        "pipecat.audio.vad.silero:SileroVADAnalyzer",
        R_VAD,
        {
            "pipelines/audio/vad.py": (
                "_low_confidence_windows _maybe_reset_model _model _windows_since_reset"
            ),
        },
    ),
    *_group(
        "pipecat.audio.vad.vad_analyzer:VADAnalyzer",
        R_VAD,
        {
            "pipelines/audio/vad.py": (
                "_executor _get_smoothed_volume _params _prev_volume _run_analyzer "
                "_smoothing_factor _vad_buffer _vad_frames _vad_frames_num_bytes "
                "_vad_start_frames _vad_starting_count _vad_state _vad_stop_frames "
                "_vad_stopping_count _volume_tracker"
            ),
        },
    ),
    *_group(
        "pipecat.processors.aggregators.llm_response_universal:LLMUserAggregator",
        R_CALLER_AUDIO,
        {
            "pipelines/call/caller_audio.py": "_user_is_muted _vad_controller",
        },
    ),
    *_group(
        "pipecat.serializers.twilio:TwilioFrameSerializer",
        R_SERIALIZER,
        {
            "pipelines/twilio/serializer.py": (
                "_input_resampler _output_resampler _params _sample_rate _stream_sid "
                "_twilio_sample_rate"
            ),
        },
    ),
    *_group(
        "pipecat.services.google.gemini_live.llm:GeminiLiveLLMService",
        R_GEMINI,
        {
            "pipelines/gemini/service.py": (
                "_audio_input_paused _bot_audio_buffer _client _connection_task_handler "
                "_disconnecting _end_frame_pending_bot_turn_finished _handle_connection_error "
                "_handle_send_error _handle_server_message _handle_session_ready _is_gemini_3 "
                "_ready_for_realtime_input _reconnect _send_user_audio _session "
                "_session_resumption_handle _set_bot_is_responding _settings _user_is_speaking "
                "_vad_disabled"
            ),
            "pipelines/personas/setup.py": "_connect _settings",
        },
    ),
    *_group(
        "pipecat.services.llm_service:LLMService",
        R_GEMINI,
        {
            "pipelines/gemini/service.py": "_warned_realtime_service_no_turn_frames",
        },
    ),
    *_group(
        "pipecat.transports.base_input:BaseInputTransport",
        R_TRANSPORT,
        {
            "pipelines/twilio/transport_input.py": "_params _paused",
        },
    ),
    *_group(
        "pipecat.transports.base_output:BaseOutputTransport",
        R_OUTPUT,
        {
            "pipelines/twilio/transport_output.py": ("_handle_frame _media_senders _params"),
        },
    ),
    *_group(
        "pipecat.transports.base_output:BaseOutputTransport.MediaSender",
        R_OUTPUT,
        {
            "pipelines/_compat/pipecat_speedups.py": (
                "_apply_volume _audio_queue _bot_stopped_speaking _filter_audio _mixer _next_frame"
            ),
            "pipelines/twilio/output_queue.py": (
                "_audio_buffer_cls _audio_chunk_size _audio_queue _buffer_audio "
                "_buffered_audio_bytes _destination _enqueue_audio_chunk _params _resampler "
                "_sample_rate _take_audio_chunk"
            ),
            "pipelines/twilio/transport_output.py": "_internal_write_audio_frame _resampler",
        },
    ),
    *_group(
        "pipecat.transports.base_transport:BaseTransport",
        R_TRANSPORT,
        {
            "pipelines/twilio/transport.py": "_input_name _output_name",
        },
    ),
    *_group(
        "pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy:SpeechTimeoutUserTurnStopStrategy",
        R_TURN,
        {
            "pipelines/call/pipeline.py": "_stop_secs_warned",
        },
    ),
    *_group(
        "pipecat.utils.base_object:BaseObject",
        R_TRANSPORT,
        {
            "pipelines/twilio/transport.py": "_call_event_handler _register_event_handler",
        },
    ),
)
