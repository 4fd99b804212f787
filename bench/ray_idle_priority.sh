#!/usr/bin/env bash
# Diagnostic for docs/performance.md, 2026-12-06 (7): while `bench/train_step.py` runs, put every
# thread of its local Ray and of the bench process at SCHED_IDLE, except the two busiest threads of
# each round's `phyray train` worker (the step's TrainingThread and libgomp's pool thread), once
# that step runs; applied twice per round, to catch threads started late. Run it beside the bench:
#     .venv/bin/python bench/train_step.py --threads 2 --rounds 3 --steps 240 & bash bench/ray_idle_priority.sh
# A process cannot raise its threads' priority back without privilege, so each round's Ray stays
# so until it stops; this is why phyray does not do it itself.
set -u
ticks() { for t in /proc/$1/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat" 2>/dev/null)"; done | sort; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sleep 2
seen=""
while pgrep -f "bench/train_step.py" >/dev/null; do
  sleep 0.5
  worker=$(pgrep -f "ray::RayTrainWorker" | head -1)
  [ -n "$worker" ] || continue
  case " $seen " in *" $worker "*) continue ;; esac
  before=$(awk '{print $14+$15}' "/proc/$worker/stat" 2>/dev/null); sleep 1
  after=$(awk '{print $14+$15}' "/proc/$worker/stat" 2>/dev/null)
  [ -n "$after" ] && [ $((after - before)) -gt 120 ] || continue  # the step has started (> 1.2 cores)
  ticks "$worker" > "$scratch/0"; sleep 1; ticks "$worker" > "$scratch/1"
  step_threads=$(join "$scratch/0" "$scratch/1" | awk '{print $3-$2, $1}' | sort -rn | head -2 | awk '{print $2}')
  for pass in 1 2; do
    count=0
    for pid in $(pgrep -f "ray::|raylet|gcs_server|ray/dashboard|ray/_private|log_monitor|bench/train_step.py"); do
      for task in /proc/"$pid"/task/*; do
        tid=$(basename "$task")
        echo "$step_threads" | grep -qx "$tid" && continue
        chrt -i -p 0 "$tid" >/dev/null 2>&1 && count=$((count + 1))
      done
    done
    echo "worker $worker, pass $pass: SCHED_IDLE on $count threads ($(date +%T))"
    sleep 5
  done
  seen="$seen $worker"
done
