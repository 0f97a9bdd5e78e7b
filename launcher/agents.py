"""Every agent's command line for every `xx` mode, as data; nothing is started here.

Every flag was read in each CLI's `--help` or documentation, and run where the CLI installs here.
Marks in the comments: (V) = run here, or read in the installed CLI's `--help`; FROM-DOCS = read in
the vendor's documentation only, never run here. Re-verified on this machine against the installed
CLIs' `--help` (tests/agents/node_modules/.bin, temp HOME): Claude Code 2.1.330 (`-c/--continue`,
`-r/--resume [value]` = id or picker, `-p/--print`, `--model`, `--dangerously-skip-permissions`),
OpenCode 1.18.33 (`-c/--continue`, `-s/--session`, `-m provider/model`, `--auto` on the TUI and on
`run`, `run [message..]` with `-s`), Qwen Code 0.15.10 (`-c/--continue`, `-r/--resume` "without an
ID to show session picker", positional prompt = one-shot, `-m/--model`, `-y/--yolo`). Codex, Pi,
Hermes and OpenClaw were checked the same way (each flag run, or read in the installed CLI's
`--help`). Ante and Antigravity are FROM-DOCS only: their vendor installers cannot be reached from
here.

A template is a tuple of words; placeholders: "{id}" (the session), "{prompt}", and "{flags}" (the
switch that turns the agent's self-updater off where it is an argument (launcher.updaters), the
permission bypass, the model flag, then the user's extra arguments, in that order). Where an agent has
no documented spelling for a mode, the template is None and `command_line` raises UnsupportedMode with
the reason and what the agent offers instead: nothing is guessed.

Decisions (see the module functions): the permission bypass is on by default (`yolo=True`), as in the
seed project's `xx`; Pi needs none (no permission prompts), OpenClaw has no flag (its exec approvals live
in its config, FROM-DOCS `docs/cli/approvals.md`, and xx does not edit agents' config files). OpenCode's
bypass is `--auto` (verified in 1.18.33's help) rather than `"permission": "allow"` in a config, for
the same reason. A bare picker flag (`-r`) goes last so it cannot swallow a following argument.
"""

from __future__ import annotations

import dataclasses

from launcher import updaters

Template = tuple[str, ...] | None


class LaunchError(ValueError):
    """A launch that cannot be built as asked (missing session or prompt, an option the agent lacks)."""


class UnsupportedMode(LaunchError):
    """The agent has no documented command line for this mode."""


@dataclasses.dataclass(frozen=True)
class Agent:
    name: str  # as in addons.wire.identity.AGENT_LETTERS / addons.wire.identity.AGENT_NAMES
    title: str
    binary: str
    init: Template  # mode i
    cont: Template  # mode c
    print_: Template  # mode n
    session: Template  # mode s
    picker: Template  # mode r
    print_session: Template = None  # mode n with -s ID: one prompt into an existing session
    model: Template = ("-m", "{model}")
    model_needs_provider: bool = False  # the model must be provider/model
    yolo: tuple[str, ...] = ()
    yolo_in_print: bool = True  # False where non-interactive mode already bypasses approvals
    root_yolo_env: tuple[tuple[str, str], ...] = ()  # extra env for the bypass when running as root
    why_not: tuple[tuple[str, str], ...] = ()  # mode (or "model", "ns") -> why it is missing
    notes: tuple[tuple[str, str], ...] = ()  # mode (or "*") -> a note for the dry run
    # (variable set, variable missing, note): a key the agent does not read the way users expect
    key_notes: tuple[tuple[str, str, str], ...] = ()
    source: str = "run here or read in its --help (V)"
    install: str = ""  # how to install it, for `xx doctor` and a launch that finds no binary


AGENTS: dict[str, Agent] = {a.name: a for a in (
    Agent(  # Claude Code (V); --help of 2.1.330 re-read here
        "claude", "Claude Code", "claude",
        install='npm install -g @anthropic-ai/claude-code',
        init=("{flags}",),
        cont=("--continue", "{flags}"),
        print_=("--print", "{flags}", "{prompt}"),
        session=("--resume", "{id}", "{flags}"),
        picker=("{flags}", "--resume"),  # -r/--resume with no value = picker (V, help)
        print_session=("--print", "--resume", "{id}", "{flags}", "{prompt}"),
        model=("--model", "{model}"),
        yolo=("--dangerously-skip-permissions",),
        root_yolo_env=(("IS_SANDBOX", "1"),),  # the bypass is refused as root unless IS_SANDBOX=1 (V)
    ),
    Agent(  # Codex CLI (V, help of 0.169); --no-daemon for interactive launches: its TUI's daemon outlives it (V)
        "codex", "Codex CLI", "codex",
        init=("--no-daemon", "{flags}"),
        cont=("resume", "--last", "--no-daemon", "{flags}"),
        # headless: `codex exec --skip-git-repo-check` (outside a git repo); exec's own options precede its `resume`
        # subcommand (clap; openai/codex codex-rs/exec/src/cli.rs, FROM-SOURCE)
        print_=("exec", "--skip-git-repo-check", "{flags}", "{prompt}"),
        session=("resume", "{id}", "--no-daemon", "{flags}"),
        picker=("resume", "--no-daemon", "{flags}"),
        print_session=("exec", "--skip-git-repo-check", "{flags}", "resume", "{id}", "{prompt}"),
        yolo=("--dangerously-bypass-approvals-and-sandbox",),
        # --no-daemon is in the help of `codex` and of `codex resume` (0.169.0, re-read here)
        # seen here with 0.169.0: OPENAI_API_KEY alone reaches the provider as no Authorization at all
        key_notes=(("OPENAI_API_KEY", "CODEX_API_KEY",
                    "Codex sends no key from OPENAI_API_KEY alone (seen with 0.169.0): set CODEX_API_KEY, "
                    "or log in with `codex login --with-api-key`"),),
        install="npm install -g @openai/codex",
    ),
    Agent(  # OpenCode; all flags re-verified in 1.18.33's --help
        "opencode", "OpenCode", "opencode",
        install='npm install -g opencode-ai',
        init=("{flags}",),
        cont=("--continue", "{flags}"),
        print_=("run", "{flags}", "{prompt}"),
        session=("--session", "{id}", "{flags}"),
        picker=None,
        print_session=("run", "--session", "{id}", "{flags}", "{prompt}"),
        model_needs_provider=True,
        yolo=("--auto",),
        why_not=(("r", "OpenCode has no resume picker on its command line (sessions are picked inside the "
                       "TUI; `opencode session list` lists their ids)"),),
    ),
    Agent(  # Qwen Code; re-verified in 0.15.10's --help
        "qwen", "Qwen Code", "qwen",
        install='npm install -g @qwen-code/qwen-code',
        init=("{flags}",),
        cont=("--continue", "{flags}"),
        print_=("{flags}", "{prompt}"),  # positional prompt = one-shot (-p is deprecated)
        session=("-r", "{id}", "{flags}"),
        picker=("{flags}", "-r"),
        yolo=("--yolo",),
        why_not=(("ns", "Qwen Code's help does not document a one-shot prompt into a resumed session"),),
    ),
    Agent(  # Pi (V, help); no permission prompts (FROM-DOCS README "No permission popups")
        "pi", "Pi", "pi",
        install='npm install -g @mariozechner/pi-coding-agent',
        init=("{flags}",),
        cont=("--continue", "{flags}"),
        print_=("--print", "{flags}", "{prompt}"),
        session=("--session", "{id}", "{flags}"),
        picker=("{flags}", "--resume"),
        # one prompt into a session: run here with Pi 0.73.1 (an id prefix is enough)
        print_session=("--session", "{id}", "{flags}", "--print", "{prompt}"),
        model=("--model", "{model}"),  # provider/model or a bare model id (`--model X/Y`, V)
        yolo=(),
    ),
    Agent(  # Hermes Agent (V, help of 0.19.0)
        "hermes", "Hermes Agent", "hermes",
        install='pipx install hermes-agent (Python >= 3.12)',
        init=("{flags}",),
        cont=("{flags}", "--continue"),  # --continue [name]: last, so it takes no following word
        print_=("{flags}", "-z", "{prompt}"),  # -z one-shot: approvals auto-bypassed (V)
        session=("-r", "{id}", "{flags}"),
        picker=None,
        yolo=("--yolo",),
        yolo_in_print=False,
        why_not=(("r", "Hermes has no documented resume picker (`hermes sessions` lists sessions; "
                       "UNVERIFIED as a picker)"),
                 ("ns", "Hermes' one-shot -z is not documented together with -r")),
    ),
    Agent(  # Ante: FROM-DOCS (AntigmaLabs/ante docs-site cli-reference.mdx), never run here
        "ante", "Ante", "ante",
        install="Ante's installer script (see its README); not on npm or PyPI",
        init=("{flags}",),
        cont=None,
        print_=("{flags}", "-p", "{prompt}"),
        session=("-r", "{id}", "{flags}"),
        picker=None,
        yolo=("--yolo",),
        why_not=(("c", "Ante documents no continue-last flag (FROM-DOCS cli-reference)"),
                 ("r", "Ante documents no resume picker (not run: Ante cannot be installed here)"),
                 ("ns", "Ante's -p is not documented together with -r")),
        source="its documentation only (FROM-DOCS)",
    ),
    Agent(  # Antigravity CLI: FROM-DOCS (antigravity-cli docs), never run here
        "antigravity", "Antigravity CLI", "agy",
        install="Antigravity CLI's installer script (Google); not on npm or PyPI",
        init=("{flags}",),
        cont=("--continue", "{flags}"),
        print_=("{flags}", "-p", "{prompt}"),
        session=("--conversation", "{id}", "{flags}"),
        picker=None,
        model=None,
        yolo=("--dangerously-skip-permissions",),
        why_not=(("r", "Antigravity's resume picker is `/resume` inside its TUI; start it with mode i"),
                 ("model", "Antigravity CLI 1.0.x rejects --model (FROM-DOCS antigravity-plugin-cc notes); "
                           "choose the model with /model inside its TUI"),
                 ("ns", "agy -p is not documented together with --conversation")),
        notes=(("n", "agy -p hangs without a TTY in some versions (FROM-DOCS antigravity-cli issue #318)"),),
        source="its documentation only (FROM-DOCS)",
    ),
    Agent(  # OpenClaw (V, help of 2026.9.6)
        "openclaw", "OpenClaw", "openclaw",
        install='npm install -g openclaw (needs Node >= 24.16)',
        # `tui --local` (not `chat`): the model calls run in this process, which carries the proxy env
        init=("tui", "--local", "{flags}"),
        cont=("resume", "{flags}"),
        print_=("agent", "exec", "{flags}", "{prompt}"),
        session=None,
        picker=None,
        print_session=("agent", "--session-id", "{id}", "{flags}", "-m", "{prompt}"),
        model=("--model", "{model}"),
        model_needs_provider=True,
        yolo=(),
        why_not=(("s", "OpenClaw resumes a session by id only with a message "
                       "(`openclaw agent --session-id ID -m MESSAGE`): use mode n with -s ID, or mode c"),
                 ("r", "OpenClaw has no documented resume picker (`openclaw resume` continues the most "
                       "recent Gateway session: mode c)")),
        notes=(("c", "`openclaw resume` continues a session of OpenClaw's Gateway: the Gateway process's "
                     "own environment decides whether its traffic passes through Clutch"),
               ("*", "OpenClaw has no permission-bypass flag: its exec approvals are configured "
                     "({security: full, ask: off}, FROM-DOCS docs/cli/approvals.md); xx leaves them as they are")),
    ),
)}

MODE_WORDS = {"i": "new session (i)", "c": "continue last (c)", "n": "non-interactive prompt (n)",
              "s": "resume by id (s)", "r": "resume picker (r)"}
_FIELDS = {"i": "init", "c": "cont", "n": "print_", "s": "session", "r": "picker"}


def agent_spec(agent: str) -> Agent:
    try:
        return AGENTS[agent]
    except KeyError:
        raise LaunchError(f"unknown agent {agent!r} (known: {', '.join(AGENTS)})") from None


def has_mode(spec: Agent, mode: str) -> bool:
    return getattr(spec, _FIELDS[mode]) is not None


def offers(spec: Agent) -> str:
    found = [MODE_WORDS[m] for m, field in _FIELDS.items() if getattr(spec, field) is not None]
    if spec.print_session is not None:
        found.append("a prompt into a session (n with -s ID)")
    return ", ".join(found)


def _refuse(spec: Agent, key: str, what: str) -> UnsupportedMode:
    why = dict(spec.why_not).get(key, "neither its --help nor its documentation has a flag for it")
    return UnsupportedMode(f"{spec.title} ({spec.name}) does not support {what}: {why}. "
                           f"It offers: {offers(spec)}.")


def command_line(agent: str, mode: str, *, session: str | None = None, model: str | None = None,
                 prompt: str | None = None, extra: tuple[str, ...] | list[str] = (),
                 yolo: bool = True) -> list[str]:
    """The argv that starts `agent` in `mode` (one of i c n s r)."""
    spec = agent_spec(agent)
    template = _template(spec, mode, session, prompt)
    flags = _flags(spec, agent, mode, model, extra, yolo)
    argv = [spec.binary]
    for word in template:
        if word == "{flags}":
            argv.extend(flags)
        elif word in ("{id}", "{prompt}"):
            value = session if word == "{id}" else prompt
            if value is None:  # the checks above give each mode's template what it names
                raise LaunchError(f"{spec.title} in mode {mode} needs {word}, which was not given")
            argv.append(value)
        else:
            argv.append(word)
    return argv


def _template(spec: Agent, mode: str, session: str | None, prompt: str | None) -> tuple[str, ...]:
    """The mode's command-line template, once the session and prompt given fit the mode."""
    if mode not in _FIELDS:
        raise LaunchError(f"unknown mode {mode!r} (one of {', '.join(_FIELDS)})")
    if mode == "s" and not session:
        raise LaunchError(f"mode s resumes a session: give its id with -s ID ({spec.title})")
    if mode not in "sn" and session:
        raise LaunchError(f"-s {session} needs mode s (or n, for one prompt into that session)")
    if mode == "n" and not prompt:
        raise LaunchError(f"mode n runs one prompt: give the prompt ({spec.title})")
    if mode != "n" and prompt:
        raise LaunchError("a prompt is only for mode n (non-interactive)")
    if mode == "n" and session:
        if spec.print_session is None:
            raise _refuse(spec, "ns", "a prompt into an existing session (mode n with -s ID)")
        return spec.print_session
    template = getattr(spec, _FIELDS[mode])
    if template is None:
        raise _refuse(spec, mode, f"mode {MODE_WORDS[mode]}")
    return template


def _flags(spec: Agent, agent: str, mode: str, model: str | None, extra: tuple[str, ...] | list[str],
           yolo: bool) -> list[str]:
    """What {flags} stands for: the updater switch, the permission bypass, the model, the user's own."""
    flags: list[str] = updaters.args_for(agent, extra)
    if yolo and (mode != "n" or spec.yolo_in_print):
        flags.extend(spec.yolo)
    if model:
        if spec.model is None:
            raise _refuse(spec, "model", f"choosing the model on the command line (-m {model})")
        if spec.model_needs_provider and "/" not in model:
            raise LaunchError(f"{spec.title} wants the model as provider/model, not {model!r}")
        flags.extend(word.replace("{model}", model) for word in spec.model)
    flags.extend(extra)
    return flags


def yolo_env(agent: str, *, is_root: bool, yolo: bool = True) -> dict[str, str]:
    """Variables the permission bypass needs (Claude Code refuses it as root unless IS_SANDBOX=1)."""
    spec = agent_spec(agent)
    return dict(spec.root_yolo_env) if yolo and is_root else {}


def notes(agent: str, mode: str, env: dict[str, str] | None = None) -> list[str]:
    """The dry-run notes of this mode, and the key notes the launch's environment calls for."""
    spec = agent_spec(agent)
    found = [text for key, text in spec.notes if key in ("*", mode)]
    if env is not None:
        found += [text for present, missing, text in spec.key_notes if env.get(present) and not env.get(missing)]
    return found
