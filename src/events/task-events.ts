// SPDX-License-Identifier: Apache-2.0
// The task events a shim publishes, one method each: topic, type URL and message as containerd
// defines them (containerd v2.3.4 core/runtime/events.go for the topics, api/events/task.proto
// for the messages; unchanged since 1.6). What the task layer knows goes in; bytes go out.
import * as E from '../gen/containerd/events/task.js';
import type { Mount } from '../gen/containerd/types/types.js';
import type { Timestamp } from '../gen/google/protobuf/timestamp.js';
import type { EventSink } from './publisher.js';

type Codec<M> = { encode(m: M): { finish(): Uint8Array }; fromPartial(o: object): M };

export interface ExitFacts { containerId: string; id: string; pid: number; exitStatus: number; exitedAt: Timestamp }

export class TaskEvents {
  constructor(private readonly sink: EventSink) {}

  private send<M>(topic: string, type: string, codec: Codec<M>, msg: object): void {
    this.sink.publish(topic, `containerd.events.${type}`, codec.encode(codec.fromPartial(msg)).finish());
  }

  create(m: {
    containerId: string; bundle: string; rootfs: Mount[];
    io: { stdin: string; stdout: string; stderr: string; terminal: boolean }; checkpoint: string; pid: number;
  }): void {
    this.send('/tasks/create', 'TaskCreate', E.TaskCreate, m);
  }

  start(containerId: string, pid: number): void { this.send('/tasks/start', 'TaskStart', E.TaskStart, { containerId, pid }); }
  execAdded(containerId: string, execId: string): void { this.send('/tasks/exec-added', 'TaskExecAdded', E.TaskExecAdded, { containerId, execId }); }
  execStarted(containerId: string, execId: string, pid: number): void {
    this.send('/tasks/exec-started', 'TaskExecStarted', E.TaskExecStarted, { containerId, execId, pid });
  }
  exit(m: ExitFacts): void { this.send('/tasks/exit', 'TaskExit', E.TaskExit, m); }
  oom(containerId: string): void { this.send('/tasks/oom', 'TaskOOM', E.TaskOOM, { containerId }); }
  paused(containerId: string): void { this.send('/tasks/paused', 'TaskPaused', E.TaskPaused, { containerId }); }
  resumed(containerId: string): void { this.send('/tasks/resumed', 'TaskResumed', E.TaskResumed, { containerId }); }
  delete(m: { containerId: string; pid: number; exitStatus: number; exitedAt: Timestamp }): void {
    this.send('/tasks/delete', 'TaskDelete', E.TaskDelete, m);
  }
}
