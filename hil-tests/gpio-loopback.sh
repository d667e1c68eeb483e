#!/usr/bin/env bash
# The button and the status LED on a real Raspberry Pi, checked through wires instead of a
# finger and an eye. Run on the Pi, as root, while cambox runs there with the GPIO board:
#
#   cambox run --board gpio --source testsrc &        # button GPIO17, LED GPIO27
#   hil-tests/gpio-loopback.sh [--http 127.0.0.1:8080] [--press-pin 22] [--sense-pin 23]
#
# Wiring (BCM numbers, header pins in brackets):
#   GPIO22 [15] -> 1 kOhm -> GPIO17 [11]   this script "presses" the button by driving 22 low
#   GPIO27 [13] -> 1 kOhm -> GPIO23 [16]   this script reads the LED's level on 23
# The real button and LED may stay connected. Needs libgpiod's tools (gpioset, gpioget;
# version 1 or 2) and curl.
#
# Checks: a short press goes live and the LED is steadily lit; a second one stops; a
# 10 ms blip (contact bounce) changes nothing; a long press (6 s) shows the address
# digits; the LED's duty cycle matches the pattern /api/v1/status names.
set -euo pipefail

http=127.0.0.1:8080
press_pin=22
sense_pin=23
chip=gpiochip0
while [ $# -gt 0 ]; do
  case "$1" in
    --http) http=$2; shift 2 ;;
    --press-pin) press_pin=$2; shift 2 ;;
    --sense-pin) sense_pin=$2; shift 2 ;;
    --chip) chip=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpio-loopback: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

for tool in gpioset gpioget curl; do
  command -v "$tool" >/dev/null || { echo "gpio-loopback: $tool is missing" >&2; exit 2; }
done
if gpioset --version 2>&1 | grep -q 'v1\.'; then gpiod=1; else gpiod=2; fi

failures=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }

status() { curl -fsS "http://$http/api/v1/status"; }
# One JSON field of the status, good enough for the flat values read here.
field() { status | grep -o "\"$1\":[^,}]*" | head -n 1 | cut -d: -f2- | tr -d '"'; }

# Holds the press pin low for $1 seconds.
press() {
  if [ "$gpiod" = 1 ]; then
    gpioset --mode=time --usec="$(awk "BEGIN{print int($1*1000000)}")" "$chip" "$press_pin=0"
  else
    timeout "$1" gpioset -c "$chip" "$press_pin=0" || true
  fi
}

sense() {
  if [ "$gpiod" = 1 ]; then
    gpioget "$chip" "$sense_pin"
  else
    gpioget -c "$chip" --numeric "$sense_pin"
  fi
}

# Samples the LED every 50 ms for $1 seconds; prints the share of samples lit (0-100).
duty() {
  local n=0 lit=0 end
  end=$(( $(date +%s%N) + ${1}000000000 ))
  while [ "$(date +%s%N)" -lt "$end" ]; do
    n=$((n + 1))
    [ "$(sense)" = 1 ] && lit=$((lit + 1))
    sleep 0.05
  done
  echo $((lit * 100 / n))
}

wait_live() {
  local want=$1
  for _ in $(seq 1 100); do
    [ "$(field live)" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

[ "$(field board)" = gpio ] || { echo "gpio-loopback: the box at $http does not use the GPIO board (--board gpio)" >&2; exit 2; }
[ "$(field live)" = false ] || { press 0.2; wait_live false || true; }

state=$(status | grep -o '"led":{"state":"[a-z_]*"' | cut -d'"' -f6)
d=$(duty 4)
case "$state" in
  ready) if [ "$d" -ge 85 ]; then pass "ready: LED lit $d% (pattern 1900 on / 100 off)"; else fail "ready: LED lit $d%, want >= 85%"; fi ;;
  searching) if [ "$d" -le 20 ]; then pass "searching: LED lit $d% (two blips every 2 s)"; else fail "searching: LED lit $d%, want <= 20%"; fi ;;
  *) echo "note  LED state $state, lit $d% over 4 s" ;;
esac

press 0.01
sleep 0.5
if [ "$(field live)" = false ]; then pass "a 10 ms blip is bounce, not a press"; else fail "a 10 ms blip changed the live state"; fi

press 0.2
if wait_live true; then pass "short press: live"; else fail "short press: not live after 10 s"; fi
sleep 0.5
d=$(duty 2)
if [ "$d" -ge 95 ]; then pass "live: LED steadily lit ($d%)"; else fail "live: LED lit $d%, want steady"; fi

press 0.2
if wait_live false; then pass "second short press: stopped"; else fail "second short press: still live"; fi

press 6
sleep 0.3
overlay=$(status | grep -o '"overlay":"[a-z_]*"' | cut -d'"' -f4 || true)
if [ "$overlay" = digits ]; then pass "long press: the address is being blinked"; else fail "long press: LED overlay '$overlay', want digits"; fi
if [ "$(field live)" = false ]; then pass "long press: live state untouched"; else fail "long press changed the live state"; fi

echo
if [ "$failures" = 0 ]; then echo "gpio-loopback: all checks passed"; else echo "gpio-loopback: $failures check(s) failed"; exit 1; fi
