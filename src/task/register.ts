// SPDX-License-Identifier: Apache-2.0
// Binds the Task service's methods to their wire names and codecs, under both service names:
// containerd.task.v3.Task (containerd 2.x, after a version-3 bootstrap) has exactly the messages
// and field numbers of containerd.task.v2.Task (containerd v2.3.4 api/runtime/task/v3/shim.proto),
// and v2 stays for containerd 1.6/1.7, 2.0–2.2 with a plain address, and downgraded clients.
import * as T from '../gen/containerd/task/v2/shim.js';
import { TtrpcServer, method } from '../ttrpc/index.js';
import { Empty } from '../events/empty.js';
import type { TaskService } from './service.js';

const TASK_SERVICE = 'containerd.task.v2.Task';
const TASK_SERVICE_V3 = 'containerd.task.v3.Task';

export function registerTaskService(server: TtrpcServer, s: TaskService): void {
  const methods = {
    State: method(T.StateRequest, T.StateResponse, (r) => s.state(r)),
    Create: method(T.CreateTaskRequest, T.CreateTaskResponse, (r) => s.create(r)),
    Start: method(T.StartRequest, T.StartResponse, (r) => s.start(r)),
    Delete: method(T.DeleteRequest, T.DeleteResponse, (r) => s.delete(r)),
    Pids: method(T.PidsRequest, T.PidsResponse, (r) => s.pids(r)),
    Pause: method(T.PauseRequest, Empty, (r) => s.pause(r)),
    Resume: method(T.ResumeRequest, Empty, (r) => s.resume(r)),
    Checkpoint: method(T.CheckpointTaskRequest, Empty, (r) => s.checkpoint(r)),
    Kill: method(T.KillRequest, Empty, (r) => s.kill(r)),
    Exec: method(T.ExecProcessRequest, Empty, (r) => s.exec(r)),
    ResizePty: method(T.ResizePtyRequest, Empty, (r) => s.resizePty(r)),
    CloseIO: method(T.CloseIORequest, Empty, (r) => s.closeIO(r)),
    Update: method(T.UpdateTaskRequest, Empty, (r) => s.update(r)),
    Wait: method(T.WaitRequest, T.WaitResponse, (r) => s.wait(r)),
    Stats: method(T.StatsRequest, T.StatsResponse, (r) => s.stats(r)),
    Connect: method(T.ConnectRequest, T.ConnectResponse, (r) => s.connect(r)),
    Shutdown: method(T.ShutdownRequest, Empty, (r) => s.shutdown(r)),
  };
  server.register(TASK_SERVICE, methods);
  server.register(TASK_SERVICE_V3, methods);
}
