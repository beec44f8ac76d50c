import { AxonCommand } from "../base.js";
import { listResult, printList, type ListResult } from "../render.js";

export default class List extends AxonCommand {
  static override summary = "List installed models";
  static override examples = ["<%= config.bin %> list", "<%= config.bin %> list --json"];

  async run(): Promise<ListResult> {
    await this.parse(List);
    const result = listResult(await (await this.axon()).list());
    printList(result, (l) => this.log(l));
    return result;
  }
}
