/* A shared scenario's page: warn before its start replaces this browser's machine. */
import { guardReplacing } from "./replace-warning.js";

guardReplacing();
