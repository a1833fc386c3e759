"""Runners: exact command lines (dry run), image fit checks, UF2, and real QEMU / qemu-user /
pipe sessions with their cleanup.

Expected values come from outside the code under test: command lines as the tools document
them, section sizes from GNU ``size``, flat images from ``objcopy -O binary``, UF2 layout from
the UF2 specification.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from targets.elf import ImageSizes, image_sizes, read_elf
from targets.runners import (
    CommandLog,
    PipeSerial,
    ProcessSession,
    QemuSystemSession,
    Session,
    choose_spec,
    make_runner,
    refuse_oversized,
)
from targets.runners import qemu_system as qemu_system_module
from targets.runners.host import HostRunner
from targets.runners.local import BoardLocal, LocalConfig, LocalConfigError, load_local_config
from targets.runners.openocd import OpenOcdRunner
from targets.runners.ssh import SshRunner, parse_destination
from targets.runners.uf2 import find_drive, uf2_blocks
from toolkit.boards import RunnerSpec, Timer, load_board
from toolkit.errors import DoesNotFit, RunnerError
from toolkit.validate.link import DeviceLink

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "runners"
ARM_CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-O2", "-nostdlib", "-ffreestanding",
              "-Wall", "-Wextra", "-Werror"]
NO_LOCAL = LocalConfig()


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _build_fw(out: Path, *defines: str) -> Path:
    _need("arm-none-eabi-gcc")
    subprocess.run(["arm-none-eabi-gcc", *ARM_CFLAGS, *defines, "-T", str(FIXTURES / "mps2.ld"),
                    str(FIXTURES / "mps2_greeter.c"), "-o", str(out)], check=True)
    return out


def _gnu_size(tool: str, path: Path) -> tuple[dict[str, int], tuple[int, int, int]]:
    """Per-section sizes (``size -A``) and Berkeley totals (``size``) from GNU binutils."""
    sysv = subprocess.run([tool, "-A", str(path)], check=True, capture_output=True, text=True).stdout
    sections = {}
    for line in sysv.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] != "Total":
            sections[parts[0]] = int(parts[1])
    berkeley = subprocess.run([tool, str(path)], check=True, capture_output=True, text=True).stdout
    text, data, bss = (int(x) for x in berkeley.splitlines()[1].split()[:3])
    return sections, (text, data, bss)


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_fw(tmp_path_factory.mktemp("fw") / "fw.elf")


@pytest.fixture(scope="module")
def echo64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("aarch64-linux-gnu-gcc")
    out = tmp_path_factory.mktemp("echo") / "echo64"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror",
                    str(FIXTURES / "stdio_echo.c"), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def echo_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("gcc")
    out = tmp_path_factory.mktemp("echo") / "echo-host"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", str(FIXTURES / "stdio_echo.c"),
                    "-o", str(out)], check=True)
    return out


RUNTIME = REPO / "firmware_gen" / "runtime"
RUNTIME_SOURCES = [str(RUNTIME / f) for f in ("bf_runtime_main.c", "bf_protocol.c", "platform_posix.c")]


def _build_runtime(cc: str, out: Path, *flags: str) -> Path:
    """The real device runtime (POSIX platform) around the add-one test model."""
    _need(cc)
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, f"-I{RUNTIME}",
                    *RUNTIME_SOURCES, str(FIXTURES / "add_one_model.c"), "-o", str(out)], check=True)
    return out


def _check_add_one(link: DeviceLink) -> None:
    """Sync, check the model's identity, run it once: the runtime and the link work end to end."""
    info = link.sync()
    assert info.model_hash[:3] == b"\x11\x22\x33" and info.plan_hash[:3] == b"\x44\x55\x66"
    x = np.array([[-128, -4, -1, 0, 1, 5, 100, 127]], dtype=np.int8)
    link.set_input(0, x)
    status, _ = link.invoke()
    assert status == 0
    np.testing.assert_array_equal(link.get_output(0), (x.astype(np.int16) + 1).astype(np.uint8).view(np.int8))


def _pid(dev: Session) -> int:
    assert isinstance(dev, ProcessSession) and dev.pid is not None
    return dev.pid


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return _gone(pid)


# --------------------------------------------------------------------------------------------
# ELF sizes and load segments against GNU binutils
# --------------------------------------------------------------------------------------------


@pytest.mark.cross
def test_elf_sections_and_berkeley_sizes_match_gnu_size(tmp_path: Path, echo64: Path) -> None:
    _need("arm-none-eabi-size", "aarch64-linux-gnu-size")
    arm = _build_fw(tmp_path / "fwd.elf", "-DWITH_DATA", "-DBSS_BYTES=100")
    for tool, path in (("arm-none-eabi-size", arm), ("aarch64-linux-gnu-size", echo64)):
        sections, (text, data, bss) = _gnu_size(tool, path)
        elf = read_elf(path)
        mine = {s.name: s.size for s in elf.sections if s.name}
        # size -A lists what BFD calls sections: every allocated one, not the symbol tables.
        assert {name: mine[name] for name in sections} == sections
        assert {s.name for s in elf.sections if s.allocated} <= set(sections)
        sizes = elf.sizes()
        assert (sizes.text, sizes.data, sizes.bss) == (text, data, bss)
    assert read_elf(arm).bits == 32 and read_elf(echo64).bits == 64


@pytest.mark.cross
def test_elf_load_chunks_equal_objcopy_binary(tmp_path: Path) -> None:
    _need("arm-none-eabi-objcopy")
    elf = _build_fw(tmp_path / "fwd.elf", "-DWITH_DATA")
    flat = tmp_path / "fwd.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(flat)], check=True)
    chunks = read_elf(elf).load_chunks()
    assert len(chunks) == 2  # .text, and .data's load image right after it
    base = chunks[0][0]
    image = bytearray()
    for address, data in chunks:
        image += b"\0" * (address - base - len(image)) + data
    assert bytes(image) == flat.read_bytes()
    assert struct.pack("<3I", 0x12345678, 0x9ABCDEF0, 0x0BADF00D) in flat.read_bytes()


def test_raw_binary_is_all_flash(tmp_path: Path) -> None:
    blob = tmp_path / "app.bin"
    blob.write_bytes(b"\x01" * 1000)
    assert image_sizes(blob) == ImageSizes(text=1000, data=0, bss=0)


# --------------------------------------------------------------------------------------------
# Refusing oversized images
# --------------------------------------------------------------------------------------------


@pytest.mark.cross
def test_oversized_flash_image_is_refused_with_bytes_needed_and_available(tmp_path: Path) -> None:
    _need("arm-none-eabi-size")
    board = load_board("mps2-an386")
    big = _build_fw(tmp_path / "big.elf", f"-DBIG_BYTES={1536 * 1024}")
    _, (text, data, _) = _gnu_size("arm-none-eabi-size", big)
    with pytest.raises(DoesNotFit) as info:
        refuse_oversized(big, board)
    assert info.value.needed == text + data
    assert info.value.available == 1_048_576
    message = str(info.value)
    assert f"needs {text + data:,} bytes" in message
    assert "1,048,576 bytes available" in message and "mps2-an386" in message


@pytest.mark.cross
def test_oversized_ram_image_is_refused_counting_the_stack(tmp_path: Path) -> None:
    _need("arm-none-eabi-size")
    board = load_board("microbit")  # 16 KiB of RAM, 2 KiB stack
    elf = _build_fw(tmp_path / "bss.elf", "-DBSS_BYTES=15000")
    _, (_, data, bss) = _gnu_size("arm-none-eabi-size", elf)
    with pytest.raises(DoesNotFit) as info:
        refuse_oversized(elf, board)
    assert info.value.needed == data + bss + 2048
    assert f"needs {data + bss + 2048:,} bytes, 16,384 bytes available" in str(info.value)
    # 12 KiB of bss leaves room for the 2 KiB stack.
    assert refuse_oversized(_build_fw(tmp_path / "ok.elf", "-DBSS_BYTES=12000"), board).bss >= 12000


def test_stack_sections_are_not_counted_twice() -> None:
    board = load_board("microbit")  # 16,384 bytes of RAM, of which the stack takes 2,048
    # A linker script that reserves the stack as a section: bss already holds it.
    full = ImageSizes(text=100, data=0, bss=16_384, stack_heap=2_048)
    assert refuse_oversized(full, board) == full
    with pytest.raises(DoesNotFit, match="needs 16,385 bytes"):
        refuse_oversized(ImageSizes(text=100, data=0, bss=16_385, stack_heap=2_048), board)
    # Without such a section the board's stack comes on top of bss.
    refuse_oversized(ImageSizes(text=100, data=0, bss=14_336), board)
    with pytest.raises(DoesNotFit, match="needs 16,385 bytes"):
        refuse_oversized(ImageSizes(text=100, data=0, bss=14_337), board)


@pytest.mark.cross
def test_runner_refuses_before_running_anything(tmp_path: Path) -> None:
    big = _build_fw(tmp_path / "big.elf", f"-DBIG_BYTES={1536 * 1024}")
    runner = make_runner(load_board("mps2-an386"), dry_run=True, local=NO_LOCAL)
    with pytest.raises(DoesNotFit):
        runner.start(big)
    assert runner.log.steps == []


# --------------------------------------------------------------------------------------------
# Exact command lines (dry run)
# --------------------------------------------------------------------------------------------


@pytest.mark.cross
def test_qemu_system_command_lines(fw: Path) -> None:
    mps2 = load_board("mps2-an386")
    runner = qemu_system_module.QemuSystemRunner(mps2, mps2.runner, log=CommandLog(dry_run=True),
                                                 tcp_port=4321)
    with runner.start(fw) as dev:
        assert dev.serial_url == "socket://127.0.0.1:4321"
        assert dev.counts == "instructions"
    assert runner.log.commands == [(
        "qemu-system-arm", "-M", "mps2-an386", "-display", "none", "-monitor", "none",
        "-icount", "shift=6", "-semihosting-config", "enable=on,target=native",
        "-kernel", str(fw), "-serial", "tcp:127.0.0.1:4321,server=on,wait=off,nodelay=on",
    )]
    hifive = make_runner(load_board("hifive1"), dry_run=True, local=NO_LOCAL)
    assert hifive.command("fw.elf", 5000) == [  # type: ignore[attr-defined]
        "qemu-system-riscv32", "-M", "sifive_e,revb=true", "-display", "none", "-monitor", "none",
        "-icount", "shift=0", "-semihosting-config", "enable=on,target=native",
        "-kernel", "fw.elf", "-serial", "tcp:127.0.0.1:5000,server=on,wait=off,nodelay=on",
    ]
    netduino = qemu_system_module.QemuSystemRunner(
        load_board("netduinoplus2"), RunnerSpec("qemu-system"), deterministic=False, semihosting=False)
    assert netduino.command("fw.elf", 5001) == [
        "qemu-system-arm", "-M", "netduinoplus2", "-display", "none", "-monitor", "none",
        "-kernel", "fw.elf", "-serial", "tcp:127.0.0.1:5001,server=on,wait=off,nodelay=on",
    ]
    assert netduino.capabilities.counts == "nanoseconds"


def test_qemu_user_command_lines(tmp_path: Path) -> None:
    prog = minimal_elf(tmp_path)
    for board_id, binary, cpu in (("rpi4", "qemu-aarch64", "cortex-a72"),
                                  ("rpi5", "qemu-aarch64", "cortex-a76"),
                                  ("rpi3-32bit", "qemu-arm", "cortex-a7")):
        runner = make_runner(load_board(board_id), dry_run=True, local=NO_LOCAL)
        with runner.start(prog) as dev:
            assert dev.serial_url is None  # nothing was started
            with pytest.raises(RunnerError, match="dry run"):
                dev.open_serial()
        assert runner.log.commands == [(binary, "-cpu", cpu, str(prog), "-")]
        assert runner.capabilities.counts == "nanoseconds" and runner.capabilities.emulated


@pytest.mark.cross
def test_pyocd_command_lines(fw: Path) -> None:
    nano = make_runner(load_board("nano33ble"), dry_run=True,
                       local=BoardLocal(port="/dev/ttyACM0", probe="0240000034544e45"))
    with nano.start(fw) as dev:
        assert dev.serial_url == "/dev/ttyACM0"
    nano.reset()
    assert nano.log.commands == [
        ("pyocd", "flash", "-t", "nrf52840", "-u", "0240000034544e45", "--format", "elf", str(fw)),
        ("pyocd", "reset", "-t", "nrf52840", "-u", "0240000034544e45"),
    ]
    nucleo = make_runner(load_board("nucleo-l4r5zi"), dry_run=True, prefer="pyocd", local=NO_LOCAL)
    nucleo.flash(fw)
    assert nucleo.log.commands == [
        ("pyocd", "pack", "install", "stm32l4r5zitx"),
        ("pyocd", "flash", "-t", "stm32l4r5zitx", "--format", "elf", str(fw)),
    ]
    assert nucleo.capabilities.counts == "cycles" and nucleo.capabilities.flash


@pytest.mark.cross
def test_openocd_command_lines(fw: Path, tmp_path: Path) -> None:
    spaced = tmp_path / "my build" / "fw.elf"
    spaced.parent.mkdir()
    shutil.copy(fw, spaced)
    pico = make_runner(load_board("pico"), dry_run=True, prefer="openocd",
                       local=BoardLocal(probe="E6614C311B4B7B37"))
    pico.flash(spaced)
    pico.reset()
    setup = ("-f", "interface/cmsis-dap.cfg", "-f", "target/rp2040.cfg",
             "-c", "adapter serial E6614C311B4B7B37", "-c", "adapter speed 5000")
    assert pico.log.commands == [
        ("openocd", *setup, "-c", f"program {{{spaced}}} verify reset exit"),
        ("openocd", *setup, "-c", "init", "-c", "reset run", "-c", "shutdown"),
    ]
    microbit = make_runner(load_board("microbit"), dry_run=True, prefer="openocd", local=NO_LOCAL)
    microbit.flash(fw)
    assert microbit.log.commands == [
        ("openocd", "-f", "interface/cmsis-dap.cfg", "-f", "target/nrf51.cfg",
         "-c", f"program {fw} verify reset exit"),
    ]
    assert isinstance(microbit, OpenOcdRunner)


@pytest.mark.cross
def test_st_flash_command_lines(fw: Path) -> None:
    runner = make_runner(load_board("nucleo-l4r5zi"), dry_run=True,
                         local=BoardLocal(probe="066DFF485550755187121723", port="/dev/ttyACM1"))
    runner.flash(fw)
    runner.reset()
    assert runner.log.commands == [
        ("arm-none-eabi-objcopy", "-O", "binary", str(fw), str(fw.with_suffix(".bin"))),
        ("st-flash", "--serial", "066DFF485550755187121723", "--reset", "write",
         str(fw.with_suffix(".bin")), "0x8000000"),
        ("st-flash", "--serial", "066DFF485550755187121723", "reset"),
    ]
    assert not fw.with_suffix(".bin").exists()  # a dry run runs nothing


def test_esptool_command_lines(tmp_path: Path) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(b"\xe9" + b"\0" * 4095)
    esp = load_board("esp32-s3")
    runner = make_runner(esp, dry_run=True, port="/dev/ttyUSB0", local=NO_LOCAL)
    runner.flash(app)
    runner.reset()
    esptool = (sys.executable, "-m", "esptool", "--chip", "esp32s3")
    assert runner.log.commands == [
        (*esptool, "-p", "/dev/ttyUSB0", "-b", "460800", "--before", "default_reset",
         "--after", "hard_reset", "write_flash", "0x10000", str(app)),
        (*esptool, "-p", "/dev/ttyUSB0", "run"),
    ]
    # An ESP-IDF build directory: its flasher_args.json says what goes where.
    (tmp_path / "flasher_args.json").write_text(
        '{"write_flash_args": ["--flash_mode", "dio", "--flash_size", "8MB"],'
        ' "flash_files": {"0x10000": "app.bin", "0x0": "bootloader/bootloader.bin",'
        ' "0x8000": "partition_table/partition-table.bin"}}')
    runner = make_runner(esp, dry_run=True, port="/dev/ttyUSB0", local=NO_LOCAL)
    runner.flash(app)
    assert runner.log.commands == [
        (*esptool, "-p", "/dev/ttyUSB0", "-b", "460800", "--before", "default_reset",
         "--after", "hard_reset", "write_flash", "--flash_mode", "dio", "--flash_size", "8MB",
         "0x0", str(tmp_path / "bootloader/bootloader.bin"),
         "0x8000", str(tmp_path / "partition_table/partition-table.bin"), "0x10000", str(app)),
    ]
    with pytest.raises(RunnerError, match="needs a serial port"):
        make_runner(esp, dry_run=True, local=NO_LOCAL).flash(app)


def test_esptool_converts_an_elf_first(tmp_path: Path) -> None:
    elf = tmp_path / "app.elf"
    shutil.copy(minimal_elf(tmp_path), elf)
    runner = make_runner(load_board("esp32-s3"), dry_run=True, port="/dev/ttyUSB0", local=NO_LOCAL)
    runner.flash(elf)
    assert runner.log.commands[0] == (sys.executable, "-m", "esptool", "--chip", "esp32s3",
                                      "elf2image", "-o", str(tmp_path / "app.bin"), str(elf))
    assert runner.log.commands[1][-2:] == ("0x10000", str(tmp_path / "app.bin"))


def minimal_elf(tmp_path: Path) -> Path:
    """A minimal valid 32-bit ELF (headers only) written by hand: 52-byte header, no sections."""
    path = tmp_path / "min.elf"
    header = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9 + struct.pack(
        "<HHIIIIIHHHHHH", 2, 94, 1, 0, 0, 0, 0, 52, 32, 0, 40, 0, 0)
    path.write_bytes(header)
    return path


def test_ssh_command_lines(tmp_path: Path) -> None:
    prog = tmp_path / "boardfit-prog"
    prog.write_bytes(b"#!/bin/sh\n")
    runner = make_runner(load_board("rpi4"), dry_run=True, prefer="ssh",
                         local=BoardLocal(host="pi@raspberrypi.local", port="/dev/ttyUSB0"))
    with runner.start(prog) as dev:
        assert dev.counts == "nanoseconds"
    assert runner.log.commands == [
        ("ssh", "-o", "BatchMode=yes", "pi@raspberrypi.local", "mkdir", "-p", "/tmp/boardfit"),
        ("scp", "-o", "BatchMode=yes", "-q", str(prog), "pi@raspberrypi.local:/tmp/boardfit/boardfit-prog"),
        ("ssh", "-o", "BatchMode=yes", "-T", "-e", "none", "pi@raspberrypi.local",
         "/tmp/boardfit/boardfit-prog -"),
    ]
    # --port ssh://user@host:port selects the ssh runner (a port means a real board) and overrides
    # the configured host.
    runner = make_runner(load_board("rpi3-32bit"), dry_run=True, port="ssh://me@10.0.0.7:2222",
                         local=BoardLocal(host="pi@raspberrypi.local"))
    assert isinstance(runner, SshRunner)
    runner.flash(prog)
    assert runner.log.commands == [
        ("ssh", "-o", "BatchMode=yes", "-p", "2222", "me@10.0.0.7", "mkdir", "-p", "/tmp/boardfit"),
        ("scp", "-o", "BatchMode=yes", "-P", "2222", "-q", str(prog),
         "me@10.0.0.7:/tmp/boardfit/boardfit-prog"),
    ]
    with pytest.raises(RunnerError, match="no ssh host"):
        make_runner(load_board("rpi4"), dry_run=True, prefer="ssh", local=NO_LOCAL).flash(prog)


def test_uf2_dry_run_records_conversion_and_copy_and_writes_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app.bin"
    app.write_bytes(b"\x00" * 600)
    runner = make_runner(load_board("pico"), dry_run=True, local=BoardLocal(drive="/media/me/RPI-RP2"))
    runner.flash(app)
    assert [str(s) for s in runner.log.steps] == [
        f"# boardfit: uf2 {app} {tmp_path / 'app.uf2'} family=0xe48bff56",
        f"# boardfit: cp {tmp_path / 'app.uf2'} /media/me/RPI-RP2/boardfit.uf2",
    ]
    assert runner.log.commands == []  # no subprocess at all
    assert not (tmp_path / "app.uf2").exists()


def test_parse_ssh_destinations() -> None:
    assert parse_destination("pi@host") == parse_destination("ssh://pi@host")
    d = parse_destination("ssh://pi@10.1.2.3:2200")
    assert (d.user, d.host, d.port, d.target) == ("pi", "10.1.2.3", 2200, "pi@10.1.2.3")
    assert parse_destination("raspberrypi.local").target == "raspberrypi.local"
    with pytest.raises(RunnerError):
        parse_destination("pi@host with spaces")


# --------------------------------------------------------------------------------------------
# Choosing a runner, local configuration, the command funnel
# --------------------------------------------------------------------------------------------


def test_runner_choice_follows_board_order_prefer_port_and_local_config() -> None:
    microbit = load_board("microbit")
    assert choose_spec(microbit).kind == "qemu-system"
    assert choose_spec(microbit, port="/dev/ttyACM0").kind == "pyocd"  # a port means a real board
    assert choose_spec(microbit, prefer="openocd").kind == "openocd"
    assert choose_spec(microbit, local=BoardLocal(runner="openocd")).kind == "openocd"
    with pytest.raises(RunnerError, match="no 'st-flash' runner; its runners: qemu-system, pyocd, openocd"):
        choose_spec(microbit, prefer="st-flash")
    with pytest.raises(RunnerError, match="only emulated"):
        choose_spec(load_board("mps2-an386"), port="/dev/ttyACM0")


def test_local_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "local.toml"
    cfg.write_text('[boards.pico]\nport = "/dev/ttyACM3"\ndrive = "/media/x"\n'
                   '[boards.rpi4]\nhost = "pi@pi4"\nrunner = "ssh"\n')
    monkeypatch.setenv("BOARDFIT_LOCAL_CONFIG", str(cfg))
    config = load_local_config()
    assert config.for_board("pico") == BoardLocal(port="/dev/ttyACM3", drive="/media/x")
    assert config.for_board("mps2-an386") == BoardLocal()
    runner = make_runner(load_board("rpi4"), dry_run=True)
    assert isinstance(runner, SshRunner) and runner.destination().target == "pi@pi4"
    cfg.write_text('[boards.pico]\nprot = "/dev/ttyACM3"\n')
    with pytest.raises(LocalConfigError, match=r"boards\.pico\.prot: unknown key"):
        load_local_config()
    assert load_local_config(tmp_path / "absent.toml").boards == {}


def test_command_failure_quotes_command_exit_code_and_stderr_tail() -> None:
    log = CommandLog()
    script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3"
    with pytest.raises(RunnerError) as info:
        log.run(["sh", "-c", script])
    message = str(info.value)
    assert "sh -c" in message and "exit code 3" in message
    assert "line30" in message and "line19" in message and "line18" not in message  # last 12 lines
    assert log.run(["sh", "-c", "exit 4"], check=False).returncode == 4
    with pytest.raises(RunnerError, match=r"boardfit-no-such-tool is not installed.*apt-get install x"):
        log.run(["boardfit-no-such-tool"], missing_hint="apt-get install x")
    with pytest.raises(RunnerError, match=r"did not finish in 0\.2 s"):
        log.run(["sleep", "5"], timeout=0.2)
    assert [c[0] for c in log.commands] == ["sh", "sh", "boardfit-no-such-tool", "sleep"]


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    log = CommandLog(dry_run=True)
    result = log.run(["touch", str(marker)])
    assert result.dry_run and result.returncode == 0
    assert log.spawn(["touch", str(marker)]) is None
    assert not marker.exists()
    assert log.describe() == f"touch {marker}\ntouch {marker}"


def test_ticks_convert_to_the_declared_unit() -> None:
    mps2 = make_runner(load_board("mps2-an386"), local=NO_LOCAL)
    assert mps2.capabilities.counts == "instructions"
    # -icount shift=6: 64 ns per instruction; SysTick at 25 MHz: 40 ns per tick.
    assert mps2.to_count(1600) == 1000
    nano = load_board("nano33ble")  # 64 MHz core; here timed by a 16 MHz nRF TIMER
    slow_timer = dataclasses.replace(nano, timer=Timer("nrf-timer", 16_000_000, base=0x4000_8000))
    runner = make_runner(slow_timer, local=NO_LOCAL)
    assert runner.capabilities.counts == "cycles"
    assert runner.to_count(1000) == 4000
    assert make_runner(nano, local=NO_LOCAL).to_count(1000) == 1000  # SysTick: core cycles
    rpi = make_runner(load_board("rpi4"), local=NO_LOCAL)
    assert rpi.to_count(12345) == 12345  # clock_gettime nanoseconds


# --------------------------------------------------------------------------------------------
# UF2
# --------------------------------------------------------------------------------------------


def _blocks(data: bytes) -> list[tuple[tuple[int, ...], bytes, int]]:
    assert len(data) % 512 == 0
    out = []
    for off in range(0, len(data), 512):
        block = data[off:off + 512]
        out.append((struct.unpack_from("<8I", block, 0), block[32:508],
                    struct.unpack_from("<I", block, 508)[0]))
    return out


def test_uf2_block_layout_follows_the_spec() -> None:
    rng_bytes = bytes((i * 37 + 11) % 256 for i in range(700))
    encoded = uf2_blocks([(0x1000_0010, rng_bytes)], family_id=0xE48BFF56)
    blocks = _blocks(encoded)
    # 0x10000010 + 700 bytes touch the 256-byte pages at 0x10000000, 0x100, 0x200 (ends 0x2CC).
    assert len(blocks) == 3
    image = bytearray(3 * 256)
    for number, (header, data, magic_end) in enumerate(blocks):
        magic0, magic1, flags, address, size, block_no, count, family = header
        assert (magic0, magic1, magic_end) == (0x0A324655, 0x9E5D5157, 0x0AB16F30)
        assert flags == 0x00002000  # familyID present
        assert address == 0x1000_0000 + 256 * number
        assert (size, block_no, count, family) == (256, number, 3, 0xE48BFF56)
        assert data[256:] == b"\0" * 220
        image[256 * number:256 * (number + 1)] = data[:256]
    assert image[0x10:0x10 + 700] == rng_bytes
    assert image[:0x10] == b"\0" * 16 and image[0x10 + 700:] == b"\0" * (768 - 0x10 - 700)
    assert encoded[:4] == b"UF2\n"


def test_uf2_pages_sorted_and_gaps_skipped() -> None:
    blocks = _blocks(uf2_blocks([(0x1000_1000, b"\xaa" * 4), (0x1000_0000, b"\xbb" * 4)], 0x1234))
    assert [h[3] for h, _, _ in blocks] == [0x1000_0000, 0x1000_1000]
    assert [h[5] for h, _, _ in blocks] == [0, 1] and all(h[6] == 2 for h, _, _ in blocks)
    assert blocks[0][1][:4] == b"\xbb" * 4 and blocks[1][1][:4] == b"\xaa" * 4


def test_uf2_copy_to_a_detected_drive(tmp_path: Path) -> None:
    media = tmp_path / "media"
    drive = media / "RPI-RP2"
    drive.mkdir(parents=True)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    (media / "OTHER").mkdir()
    (media / "OTHER" / "INFO_UF2.TXT").write_text("Board-ID: SAMD21-XYZ\n")
    app = tmp_path / "app.bin"
    app.write_bytes(bytes(range(256)) * 3 + b"\x01")
    runner = make_runner(load_board("pico"), local=BoardLocal(drive=str(media)))
    assert find_drive(media, "RPI-RP2") == drive
    runner.flash(app)
    written = (drive / "boardfit.uf2").read_bytes()
    assert written == uf2_blocks([(0x1000_0000, app.read_bytes())], 0xE48BFF56)
    assert [h[3] for h, _, _ in _blocks(written)] == [0x1000_0000 + 256 * i for i in range(4)]
    with pytest.raises(RunnerError, match=r"no RPI-RP2 boot drive.*SAMD21-XYZ"):
        find_drive(media / "OTHER", "RPI-RP2")


@pytest.mark.cross
def test_uf2_refuses_contents_outside_flash(tmp_path: Path, fw: Path) -> None:
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text("Board-ID: RPI-RP2\n")
    runner = make_runner(load_board("pico"), local=BoardLocal(drive=str(drive)))
    with pytest.raises(RunnerError, match=r"at 0x0 lie outside flash \[0x10000000"):
        runner.flash(fw)  # linked at address 0, not in the RP2040's XIP flash
    assert not (drive / "boardfit.uf2").exists()


# --------------------------------------------------------------------------------------------
# Real sessions
# --------------------------------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_system_serial_exchange_and_semihosting_exit(fw: Path) -> None:
    _need("qemu-system-arm")
    runner = make_runner(load_board("mps2-an386"), local=NO_LOCAL)
    with runner.start(fw) as dev:
        assert dev.serial_url is not None and dev.serial_url.startswith("socket://127.0.0.1:")
        pid = _pid(dev)
        assert pid is not None and not _gone(pid)
        link = dev.open_serial(timeout=3.0)
        link.write(b"Z")
        assert link.read_until(b"\n") == b"hello from boardfit Z\n"
        link.write(bytes([42]))
        assert dev.wait(5.0) == 42  # SYS_EXIT_EXTENDED code becomes QEMU's exit status
        link.close()
    assert _gone(pid)
    assert runner.log.commands[0][0] == "qemu-system-arm"


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_system_killed_on_close_and_start_errors_quote_qemu(fw: Path) -> None:
    _need("qemu-system-arm")
    board = load_board("mps2-an386")
    with make_runner(board, local=NO_LOCAL).start(fw) as dev:
        pid = _pid(dev)
        assert pid is not None
        with pytest.raises(RunnerError, match="still running"):
            dev.wait(0.1)
    assert _wait_gone(pid, 2.0)
    assert board.emulator is not None
    broken = dataclasses.replace(board, emulator=dataclasses.replace(board.emulator,
                                                                      args=("-no-such-option",)))
    with pytest.raises(RunnerError, match=r"QEMU did not start fw\.elf on mps2-an386:\n.*no-such-option"):
        make_runner(broken, local=NO_LOCAL).start(fw)


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_lockup_is_reported_with_qemus_message(fw: Path) -> None:
    _need("qemu-system-arm")
    board = load_board("mps2-an386")
    # Without -semihosting-config the firmware's semihosting call is a fault QEMU cannot take.
    runner = qemu_system_module.QemuSystemRunner(board, board.runner, semihosting=False)
    with runner.start(fw) as dev:
        link = dev.open_serial(timeout=3.0)
        link.write(b"A")
        assert link.read_until(b"\n") == b"hello from boardfit A\n"
        link.write(b"B")
        assert dev.wait(5.0) == -signal.SIGABRT
        with pytest.raises(RunnerError, match=r"(?s)QEMU was killed by SIGABRT:\n.*fatal: Lockup"):
            dev.check_alive()
        link.close()
    assert "-semihosting-config" not in runner.log.commands[0]


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_system_retries_when_the_port_is_taken(fw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("qemu-system-arm")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, qemu_system_module.pick_free_port()])
        monkeypatch.setattr(qemu_system_module, "pick_free_port", lambda: next(ports))
        runner = make_runner(load_board("mps2-an386"), local=NO_LOCAL)
        with runner.start(fw) as dev:
            assert isinstance(dev, QemuSystemSession) and dev.port != busy
            assert dev.poll() is None
    assert len(runner.log.commands) == 2
    assert f"tcp:127.0.0.1:{busy}," in runner.log.commands[0][-1]


_ORPHAN_SCRIPT = """
import sys, time
from targets.runners import make_runner
from targets.runners.local import LocalConfig
from toolkit.boards import load_board
session = make_runner(load_board("mps2-an386"), local=LocalConfig()).start(sys.argv[1])
print(session.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_dies_when_the_python_that_started_it_is_killed(fw: Path) -> None:
    _need("qemu-system-arm")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(fw)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, text=True)
    qemu_pid = None
    try:
        assert child.stdout is not None
        qemu_pid = int(child.stdout.readline())
        assert not _gone(qemu_pid)
        assert Path(f"/proc/{qemu_pid}/cmdline").read_bytes().startswith(b"qemu-system-arm\0")
        child.send_signal(signal.SIGKILL)  # no finally, no atexit: only PR_SET_PDEATHSIG is left
        child.wait(5)
        assert _wait_gone(qemu_pid, 5.0), "QEMU outlived the Python process that started it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if qemu_pid is not None and not _gone(qemu_pid):  # the test failed: do not leak it
            os.kill(qemu_pid, signal.SIGKILL)


@pytest.mark.qemu
@pytest.mark.cross
def test_qemu_user_program_speaks_over_a_pty(echo64: Path) -> None:
    _need("qemu-aarch64")
    runner = make_runner(load_board("rpi4"), local=NO_LOCAL)
    with runner.start(echo64) as dev:
        assert dev.serial_url is not None and dev.serial_url.startswith("/dev/pts/")
        assert stat.S_ISCHR(os.stat(dev.serial_url).st_mode)
        link = dev.open_serial(timeout=5.0)
        payload = b"abc\x00\xff\r\n\x03\x11xyz"  # raw bytes: no CR/LF mapping, no signals, no XON
        link.write(payload)
        assert link.read(len(payload)) == payload.upper()
        link.write(b"q")
        assert dev.wait(5.0) == 7
        link.close()
    assert runner.log.commands == [("qemu-aarch64", "-cpu", "cortex-a72", str(echo64), "-")]


def test_host_runner_program_over_a_pty(echo_host: Path) -> None:
    runner = HostRunner(load_board("rpi4"), RunnerSpec("host"))
    with runner.start(echo_host) as dev:
        link = dev.open_serial(timeout=2.0)
        link.write(b"ping")
        assert link.read(4) == b"PING"
        pid = _pid(dev)
        assert pid is not None
    assert _wait_gone(pid, 2.0)


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize(("board_id", "cc", "flags"), [
    ("rpi4", "aarch64-linux-gnu-gcc", ("-static",)),
    ("rpi3-32bit", "arm-linux-gnueabihf-gcc",
     ("-static", "-mcpu=cortex-a7", "-mfpu=neon-vfpv4", "-mfloat-abi=hard")),
])
def test_device_runtime_under_qemu_user_through_the_host_link(
        tmp_path: Path, board_id: str, cc: str, flags: tuple[str, ...]) -> None:
    board = load_board(board_id)
    assert board.emulator is not None
    _need(board.emulator.binary)
    exe = _build_runtime(cc, tmp_path / "add-one", *flags)
    with make_runner(board, local=NO_LOCAL).start(exe) as dev:
        link = DeviceLink(dev.open_serial(timeout=0.05))
        _check_add_one(link)
        link.close()


def test_device_runtime_on_the_host_runner(tmp_path: Path) -> None:
    exe = _build_runtime("gcc", tmp_path / "add-one")
    with HostRunner(load_board("rpi4"), RunnerSpec("host")).start(exe) as dev:
        link = DeviceLink(dev.open_serial(timeout=0.05))
        _check_add_one(link)
        link.close()


def test_a_forgotten_session_is_killed_when_collected(echo_host: Path) -> None:
    runner = HostRunner(load_board("rpi4"), RunnerSpec("host"))
    dev = runner.start(echo_host)
    pid = _pid(dev)
    assert not _gone(pid)
    del dev
    gc.collect()
    assert _wait_gone(pid, 3.0)


# --------------------------------------------------------------------------------------------
# The pipe transport (ssh's stdin/stdout) and the ssh runner against local stand-ins
# --------------------------------------------------------------------------------------------


def test_pipe_serial_over_cat() -> None:
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    link = PipeSerial(proc.stdout, proc.stdin, timeout=0.3)
    try:
        link.write(b"\x00frame\x00" + bytes(range(256)))
        assert link.read(7) == b"\x00frame\x00"
        assert link.read(256) == bytes(range(256))
        start = time.monotonic()
        assert link.read(1) == b""  # nothing comes: the timeout, not a hang
        assert 0.25 < time.monotonic() - start < 2.0
        link.write(b"abc\ndef")
        assert link.read_until(b"\n") == b"abc\n"
        time.sleep(0.05)
        assert link.in_waiting == 3
        link.reset_input_buffer()
        assert link.in_waiting == 0
        big = bytes(range(256)) * 1024  # 256 KiB: more than a pipe buffer each way
        link.timeout = 5.0
        link.write(big[:32768])
        assert link.read(32768) == big[:32768]
    finally:
        link.close()
        proc.stdin.close()
        proc.wait(5)
    with pytest.raises(Exception, match="not open"):
        link.read(1)


def test_pipe_serial_sees_the_end_of_the_stream() -> None:
    proc = subprocess.Popen(["printf", "bye"], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    link = PipeSerial(proc.stdout, proc.stdin, timeout=5.0)
    start = time.monotonic()
    assert link.read(10) == b"bye"  # returns at EOF, without waiting for the timeout
    assert time.monotonic() - start < 2.0
    link.close()
    proc.wait(5)


_FAKE_SSH = """#!/bin/sh
# Stand-in for ssh: skip options and the destination, run the remote command here.
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p|-e) shift 2 ;;
    -*) shift ;;
    *) shift; break ;;
  esac
done
exec sh -c "$*"
"""
_FAKE_SCP = """#!/bin/sh
# Stand-in for scp: the last two arguments are SOURCE and HOST:PATH.
for last; do :; done
src=""
for a; do [ "$a" = "$last" ] && break; src="$a"; done
exec cp -p "$src" "${last#*:}"
"""


def test_ssh_runner_end_to_end_with_local_stand_ins(tmp_path: Path, echo_host: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ssh", _FAKE_SSH), ("scp", _FAKE_SCP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    board = load_board("rpi4")
    remote = tmp_path / "remote dir"
    spec = RunnerSpec("ssh", options=(("remote_dir", str(remote)),))
    board = dataclasses.replace(board, runners=(spec,))
    runner = make_runner(board, local=BoardLocal(host="pi@nowhere.invalid"))
    with runner.start(echo_host) as dev:
        assert dev.serial_url is None
        link = dev.open_serial(timeout=3.0)
        link.write(b"over ssh")
        assert link.read(8) == b"OVER SSH"
        link.write(b"q")
        assert dev.wait(5.0) == 7
        link.close()
    assert (remote / echo_host.name).read_bytes() == echo_host.read_bytes()
    assert runner.log.commands[-1][-1] == f"'{remote}/{echo_host.name}' -"
    # The real device runtime over the same pipes, driven by the host link.
    exe = _build_runtime("gcc", tmp_path / "add-one")
    with runner.start(exe) as dev:
        link = DeviceLink(dev.open_serial(timeout=0.05))
        _check_add_one(link)
        link.close()


def test_every_board_runner_kind_has_a_runner_class() -> None:
    from targets.runners import RUNNERS
    from toolkit.boards import RUNNER_KINDS, list_boards

    assert set(RUNNERS) == set(RUNNER_KINDS)
    for board in list_boards():
        for spec in board.runners:
            runner = RUNNERS[spec.kind](board, spec, log=CommandLog(dry_run=True))
            caps = runner.capabilities
            assert caps.emulated == (spec.kind in ("qemu-system", "qemu-user"))
            assert re.fullmatch("instructions|cycles|nanoseconds", caps.counts)
